"""Export a LoRA model as plain merged weights in its family's own Hugging Face layout.

Merging here is a pure function of the state dict (W + ΔW computed on the fly), so exporting never
changes the model in memory: no merge/unmerge round trip and no float drift in the live weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from lightft.checkpoint import PathLike, save_checkpoint
from lightft.lora.apply import lora_layers
from lightft.task_heads import ExportPlan

# Files a tokenizer or generation needs next to the weights; copied when the base folder has them.
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
              "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja")


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict under lightft names with every unmerged ΔW folded in and no LoRA keys."""
    layers = dict(lora_layers(model))
    out = {}
    for name, tensor in model.state_dict().items():
        module, _, leaf = name.rpartition(".")
        layer = layers.get(module)
        if layer is not None:
            if leaf in ("lora_A", "lora_B"):
                continue
            if leaf == "weight" and not layer.merged:
                tensor = (tensor.float() + layer.delta_weight().detach()).to(tensor.dtype)
        out[name] = tensor
    return out


def save_merged(model: nn.Module, out_dir: PathLike, base_dir: Optional[PathLike] = None,
                dtype: Union[str, torch.dtype, None] = None, plan: Optional[ExportPlan] = None) -> Path:
    """Write config.json + model.safetensors (same keys and shapes as the input checkpoint) + tokenizer files.

    `base_dir` is where the tokenizer files come from; it defaults to the folder the model was loaded from.
    `plan` (lightft/task_heads.py) adds a task head in its transformers class's layout: the class's
    backbone prefix, its head tensors and config.json keys.
    """
    out = Path(out_dir)
    state = merged_state_dict(model)
    if plan is None:
        save_checkpoint(model, out, dtype=dtype, state=state)
    else:
        state = {k: v for k, v in state.items() if k not in plan.moved}
        save_checkpoint(model, out, dtype=dtype, state=state, prefix=plan.prefix, extra=plan.tensors,
                        config=plan.config)
    base = Path(base_dir) if base_dir is not None else Path(getattr(model, "source", {}).get("path", ""))
    if base_dir is not None or getattr(model, "source", None):
        for name in SIDE_FILES:
            if (base / name).is_file() and base.resolve() != out.resolve():
                shutil.copyfile(base / name, out / name)
    return out

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


ADAPTER_LEAVES = ("lora_A", "lora_B", "lora_magnitude_vector")


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict under lightft names with every unmerged ΔW folded in and no LoRA keys.

    Quantised layers (QLoRA) come out in full precision: dequantised W (+ ΔW), in the dtype the
    weights were loaded in; their 4-bit buffers (`qweight.*`) are left out.
    """
    layers = dict(lora_layers(model))
    quantised = {n: m for n, m in model.named_modules() if getattr(m, "qweight", None) is not None}
    skip = tuple(f"{n}.qweight." for n in quantised)
    out = {}
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            module, _, leaf = name.rpartition(".")
            if name.startswith(skip) or (module in layers and leaf in ADAPTER_LEAVES):
                continue
            layer = layers.get(module)
            if layer is not None and leaf == "weight" and not layer.merged:
                tensor = layer.merged_weight().to(tensor.dtype)
            out[name] = tensor
        for name, module in quantised.items():  # their `weight` is None (or, merged, already written above)
            if f"{name}.weight" not in out:
                layer = layers.get(name)
                weight = layer.merged_weight() if layer is not None else module.dequantized_weight(torch.float32)
                out[f"{name}.weight"] = weight.to(module.qweight.dtype)
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
    base = Path(base_dir) if base_dir is not None else Path(model.source.path) if model.source is not None else None
    if base is not None:
        for name in SIDE_FILES:
            if (base / name).is_file() and base.resolve() != out.resolve():
                shutil.copyfile(base / name, out / name)
    return out

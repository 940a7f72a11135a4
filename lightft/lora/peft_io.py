"""A LoRA adapter alone, in PEFT's folder layout, both ways (lightft -> PEFT and PEFT -> lightft).

PEFT's layout: `adapter_config.json` (rank, alpha, target modules, ...) and
`adapter_model.safetensors` with keys `base_model.model.<HF module path>.lora_A.weight` (r, in) and
`...lora_B.weight` (out, r). The HF module path of a lightft module comes from the family's own key
map read backwards (`layers.0.attn.q_proj.weight` -> `model.layers.0.self_attn.q_proj.weight`), so
no table here knows any family. GPT-2's Conv1D layers store W as (in, out), but PEFT keeps A and B in
nn.Linear's layout for them too and only sets `fan_in_fan_out` to transpose ΔW when merging; so the
tensors are written unchanged and the flag is set for GPT-2.

DoRA adapters set `use_dora: true` and add `...<module>.lora_magnitude_vector` (out,) per layer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import torch
from safetensors import safe_open
from torch import nn

from lightft.checkpoint import PathLike, read_json, write_atomic_json, write_atomic_safetensors
from lightft.errors import LightftError
from lightft.families import family_for
from lightft.lora.apply import lora_layers, mark_trainable, wrap_modules
from lightft.lora.dora import DoRALinear
from lightft.model import Transformer

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
KEY = re.compile(r"^base_model\.model\.(?P<path>.+)\.lora_(?P<ab>[AB]|magnitude_vector)(?:\.default)?(?:\.weight)?$")
TASK_TYPES = {"bert": "FEATURE_EXTRACTION", "gpt2": "CAUSAL_LM", "llama": "CAUSAL_LM"}


def hf_module_path(model: Transformer, name: str) -> str:
    """lightft module path -> the module's path in the `transformers` model (via the family key map)."""
    family = family_for(model.cfg.hf_config)
    mapped = family.KEY_MAP.to_checkpoint(name + ".weight", model.source.prefix if model.source is not None else "")
    assert mapped is not None, f"no checkpoint name for {name}.weight: extend the family's KEY_MAP"
    return mapped[0].removesuffix(".weight")


def _target_suffixes(all_paths: list[str], chosen: set[str]) -> list[str]:
    """Shortest dotted suffixes that PEFT's `target_modules` matching resolves to exactly `chosen`.

    PEFT matches a list entry t against a module path p when p == t or p ends with '.' + t. Leaf names
    are ambiguous in some families (BERT has four `dense` layers), so a longer suffix is used there.
    """
    def hits(t: str) -> set[str]:
        return {p for p in all_paths if p == t or p.endswith("." + t)}

    out: list[str] = []
    for path in sorted(chosen):
        parts = path.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if hits(suffix) <= chosen:
                if suffix not in out:
                    out.append(suffix)
                break
    return out


def save_adapter(model: Transformer, out_dir: PathLike, base_model_name_or_path: Optional[str] = None,
                 task_type: Optional[str] = None) -> Path:
    """Write the LoRA A/B matrices and their settings so `peft.PeftModel.from_pretrained` loads them."""
    layers = list(lora_layers(model))
    if not layers:
        raise LightftError("the model has no LoRA layers to export; train with LoRA or export merged weights")
    first = layers[0][1]
    dropout = getattr(first.lora_dropout, "p", 0.0)  # model.Dropout, or nn.Identity when there is none
    tensors, chosen = {}, set()
    for name, layer in layers:
        path = hf_module_path(model, name)
        chosen.add(path)
        tensors[f"{PEFT_PREFIX}{path}.lora_A.weight"] = layer.lora_A.detach().contiguous()
        tensors[f"{PEFT_PREFIX}{path}.lora_B.weight"] = layer.lora_B.detach().contiguous()
        if isinstance(layer, DoRALinear):
            tensors[f"{PEFT_PREFIX}{path}.lora_magnitude_vector"] = layer.lora_magnitude_vector.detach().contiguous()
    all_linear = [hf_module_path(model, n) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    family = model.cfg.family
    config = {
        "peft_type": "LORA",
        "task_type": task_type or TASK_TYPES.get(family),
        "base_model_name_or_path": base_model_name_or_path or (model.source.path if model.source is not None else None),
        "r": first.r,
        "lora_alpha": first.alpha,
        "lora_dropout": dropout,
        "use_rslora": first.rslora,
        "target_modules": _target_suffixes(all_linear, chosen),
        "bias": "none",
        "fan_in_fan_out": family == "gpt2",  # GPT-2's Conv1D stores W transposed
        "modules_to_save": None,
        "init_lora_weights": True,
        "inference_mode": True,
        "use_dora": isinstance(first, DoRALinear),
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic_safetensors(out / WEIGHTS, tensors, metadata={"format": "pt"})
    write_atomic_json(out / CONFIG, config)
    return out


def _check_config(cfg: dict, source: Path) -> None:
    if cfg.get("peft_type") != "LORA":
        raise LightftError(f"{source}: peft_type is {cfg.get('peft_type')!r}; only LORA adapters can be loaded")
    unsupported = {
        "rank_pattern": bool(cfg.get("rank_pattern")),
        "alpha_pattern": bool(cfg.get("alpha_pattern")),
        "modules_to_save": bool(cfg.get("modules_to_save")),
        "bias": cfg.get("bias", "none") != "none",
    }
    for key, bad in unsupported.items():
        if bad:
            raise LightftError(f"{source}: {key}={cfg.get(key)!r} is not supported by lightft's LoRA; "
                               "export the adapter without it")
    if not isinstance(cfg.get("r"), int) or "lora_alpha" not in cfg:
        raise LightftError(f"{source}: needs an integer 'r' and 'lora_alpha'")


def load_adapter(model: nn.Module, adapter_dir: PathLike) -> list[str]:
    """Apply LoRA to `model` as a PEFT adapter folder describes, and load its A/B; returns wrapped paths.

    Every key and shape is checked before the model is touched, so a bad adapter leaves it unchanged.
    """
    folder = Path(adapter_dir)
    cfg = read_json(folder / CONFIG)
    _check_config(cfg, folder / CONFIG)
    weights = folder / WEIGHTS
    if not weights.is_file():
        hint = " (pickled adapter_model.bin is never loaded: re-save with safetensors)" \
            if (folder / "adapter_model.bin").exists() else ""
        raise LightftError(f"{folder}: missing {WEIGHTS}{hint}")
    family = family_for(model.cfg.hf_config)
    modules = dict(model.named_modules())
    r, dora = cfg["r"], bool(cfg.get("use_dora"))
    found: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(str(weights), framework="pt", device="cpu") as f:
        for key in f.keys():
            m = KEY.match(key)
            mapped = family.KEY_MAP.to_lightft(m["path"] + ".weight") if m else None
            name = mapped[0].removesuffix(".weight") if mapped else None
            if name is None or not isinstance(modules.get(name), nn.Linear):
                raise LightftError(f"{weights}: key {key} names no linear layer of this {model.cfg.family} "
                                   "model; the adapter was made for a different base model")
            linear = modules[name]
            tensor = f.get_tensor(key)
            if m["ab"] == "magnitude_vector" and not dora:
                raise LightftError(f"{weights}: {key} is a DoRA magnitude, but {CONFIG} does not set use_dora")
            want = {"A": (r, linear.in_features), "B": (linear.out_features, r),
                    "magnitude_vector": (linear.out_features,)}[m["ab"]]
            if tuple(tensor.shape) != want:
                raise LightftError(f"{weights}: {key} has shape {tuple(tensor.shape)} but this model needs "
                                   f"{want}; the adapter was made for a different base model "
                                   f"({cfg.get('base_model_name_or_path')})")
            found.setdefault(name, {})[m["ab"]] = tensor
    if not found:
        raise LightftError(f"{weights}: holds no LoRA tensors")
    parts = {"A", "B", "magnitude_vector"} if dora else {"A", "B"}
    for name, got in found.items():
        if set(got) != parts:
            missing = ", ".join(f"lora_{p}" for p in sorted(parts - set(got)))
            raise LightftError(f"{weights}: {name} lacks {missing} (has {', '.join('lora_' + p for p in got)})")
    order = [n for n in modules if n in found]  # model order, not file order
    wrap_modules(model, order, r, float(cfg["lora_alpha"]), float(cfg.get("lora_dropout") or 0.0),
                 bool(cfg.get("use_rslora")), dora=dora)
    with torch.no_grad():
        for name, layer in lora_layers(model):
            layer.lora_A.copy_(found[name]["A"])
            layer.lora_B.copy_(found[name]["B"])
            if dora:
                layer.lora_magnitude_vector.copy_(found[name]["magnitude_vector"])
    mark_trainable(model, "lora")
    return order

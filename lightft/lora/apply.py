"""Put LoRA into a model from the outside: target names, `apply_lora`, merging, trainable parameters.

The model core (`lightft.model`) knows nothing of LoRA. Here chosen `nn.Linear` modules are swapped
for `LoRALinear` by module path, and trainable parameters are chosen by type (a `LoRALinear`'s A and
B), never by matching substrings of parameter names.

Target names are the same for every family and resolve against the model's own module names:

| target | module (every family)            | note                                              |
| ------ | -------------------------------- | ------------------------------------------------- |
| q k v  | attn.q_proj / k_proj / v_proj    | GPT-2: all three are the fused `attn.qkv_proj` (*) |
| o      | attn.o_proj                      |                                                   |
| gate   | mlp.gate_proj                    | gated MLPs only (Llama family); not BERT / GPT-2  |
| up     | mlp.up_proj                      |                                                   |
| down   | mlp.down_proj                    |                                                   |
| attn   | q, k, v, o                       |                                                   |
| mlp    | gate, up, down (those present)   |                                                   |
| all-linear | attn + mlp                   | all block linears; not the LM head or BERT's pooler |

(*) GPT-2 stores q, k and v in one matrix (HF `c_attn`), so `q`, `k` or `v` each put LoRA on the
whole fused layer, which is what PEFT does with `target_modules=["c_attn"]`.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Literal, Sequence, Union

from torch import nn

from lightft.errors import LightftError
from lightft.lora.dora import DoRALinear
from lightft.lora.layer import LoRALinear

Mode = Literal["lora", "full", "head"]
GROUPS = {"attn": ("q", "k", "v", "o"), "mlp": ("gate", "up", "down")}
GROUPS["all-linear"] = GROUPS["attn"] + GROUPS["mlp"]
EMBEDDINGS = ("embed_tokens", "embed_positions", "embed_types", "embed_norm")


def target_modules(cfg) -> dict[str, str]:
    """Generic target name -> module name inside a block, for this model's config (its family)."""
    fused = "attn.qkv_proj" if cfg.fused_qkv else None
    table = {
        "q": fused or "attn.q_proj",
        "k": fused or "attn.k_proj",
        "v": fused or "attn.v_proj",
        "o": "attn.o_proj",
        "up": "mlp.up_proj",
        "down": "mlp.down_proj",
    }
    if cfg.mlp == "gated":
        table["gate"] = "mlp.gate_proj"
    return table


def resolve_targets(model: nn.Module, targets: Union[str, Iterable[str]]) -> list[str]:
    """'q,v' or ['attn', 'up'] -> full module paths ('layers.0.attn.q_proj', ...), in model order."""
    names = [t.strip() for t in (targets.split(",") if isinstance(targets, str) else targets) if t.strip()]
    table = target_modules(model.cfg)
    valid = [*table, *GROUPS]
    suffixes: set[str] = set()
    for name in names:
        if name in table:
            suffixes.add(table[name])
        elif name in GROUPS:
            suffixes.update(table[t] for t in GROUPS[name] if t in table)
        else:
            raise LightftError(
                f"LoRA target {name!r} is not valid for the {model.cfg.family} family; "
                f"valid targets: {', '.join(valid)}")
    if not suffixes:
        raise LightftError(f"no LoRA targets given; valid targets: {', '.join(valid)}")
    return [f"layers.{i}.{s}" for i in range(model.cfg.num_layers) for s in sorted(suffixes)]


def wrap_modules(model: nn.Module, paths: Sequence[str], r: int, alpha: float, dropout: float = 0.0,
                 rslora: bool = False, dora: bool = False) -> list[str]:
    """Swap each named `nn.Linear` for a `LoRALinear` (`DoRALinear` with `dora`) sharing its weight and bias."""
    if not isinstance(r, int) or r <= 0:
        raise LightftError(f"LoRA rank r must be a positive integer, got {r!r}")
    if not 0.0 <= dropout < 1.0:
        raise LightftError(f"LoRA dropout must be in [0, 1), got {dropout!r}")
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise LightftError("this model already has LoRA layers; apply LoRA once (merge_lora / a fresh "
                           "load_model if you want different settings)")
    for path in paths:
        parent_name, _, child = path.rpartition(".")
        parent = model.get_submodule(parent_name)
        linear = getattr(parent, child)
        assert isinstance(linear, nn.Linear), f"{path} is {type(linear).__name__}, not nn.Linear"
        setattr(parent, child, (DoRALinear if dora else LoRALinear)(linear, r, alpha, dropout, rslora,
                                                                     ops=getattr(model, "ops", None)))
    return list(paths)


def apply_lora(model: nn.Module, targets: Union[str, Iterable[str]] = "attn", r: int = 8, alpha: float = 16.0,
               dropout: float = 0.0, rslora: bool = False, dora: bool = False) -> list[str]:
    """Add LoRA to `model` (a lightft `Transformer`) in place and freeze everything else in it.

    targets: generic names (see the module table), as 'q,v' or a list; the default `attn` (q,k,v,o) is
    the CLI's `--lora-targets` default. Returns the wrapped module
    paths. Applying LoRA twice is an error. Afterwards only the LoRA A/B matrices (and, with
    `dora`, the magnitude vectors: lightft/lora/dora.py) of `model` require grad; a task head kept
    outside the model is untouched (see `mark_trainable`). The targets may be quantised layers
    (lightft.quant): that is QLoRA.
    """
    paths = wrap_modules(model, resolve_targets(model, targets), r, alpha, dropout, rslora, dora)
    mark_trainable(model, "lora")
    return paths


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            yield name, module


def lora_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """What an optimiser trains under LoRA: each layer's `trainable_parameters()` (A, B; DoRA's magnitude)."""
    for _, layer in lora_layers(model):
        yield from layer.trainable_parameters()


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every ΔW into its base weight (idempotent); the LoRA path is skipped until `unmerge_lora`."""
    for _, layer in lora_layers(model):
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Take every ΔW back out of the base weights (idempotent)."""
    for _, layer in lora_layers(model):
        layer.unmerge()
    return model


def mark_trainable(backbone: nn.Module, mode: Mode, freeze_embeddings: bool = False) -> int:
    """Set `requires_grad` on the backbone's parameters for a training mode; return the trainable count.

    - "lora": only LoRA A/B (needs `apply_lora` first);
    - "full": every parameter (`freeze_embeddings` keeps token/position/type embeddings frozen; with
      tied embeddings that freezes the LM head too, being the same tensor);
    - "head": nothing in the backbone (train only a task head).
    Only `backbone` is touched: task heads live outside it and keep their own settings.
    """
    has_lora = any(True for _ in lora_layers(backbone))
    if mode == "lora" and not has_lora:
        raise LightftError("mode 'lora' needs LoRA layers: call apply_lora(model, targets, r, alpha) first")
    if mode == "full" and has_lora:
        raise LightftError("mode 'full' trains every weight and does not use LoRA; load the model without LoRA")
    if mode not in ("lora", "full", "head"):
        raise LightftError(f"training mode {mode!r} is not valid; choose lora, full or head")
    for p in backbone.parameters():
        p.requires_grad_(mode == "full")
    if mode == "lora":
        for p in lora_parameters(backbone):
            p.requires_grad_(True)
    if freeze_embeddings:
        for name in EMBEDDINGS:
            module = getattr(backbone, name, None)
            if module is not None:
                module.requires_grad_(False)
    return sum(p.numel() for p in {id(p): p for p in backbone.parameters() if p.requires_grad}.values())

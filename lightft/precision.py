"""`--precision auto` and `--dtype auto`: bf16 where the hardware runs it fast, fp32 elsewhere.

Why auto is the default: on a CPU with AMX or AVX-512-BF16, or a GPU with bf16 tensor cores, bf16
matmuls run several times faster than fp32 and halve the bytes every frozen weight moves; on a
plain AVX2 CPU, bf16 is emulated and its matmuls run tens of times slower than fp32. A newcomer
should not have to know which machine they are on. The answer comes from the CPU's feature flags
(/proc/cpuinfo, else torch's own CPU probe) or CUDA's device properties, never from a timing probe:
instant, and the same under any load.

What auto resolves to (`resolve_precision`, `resolve_dtype`), once, at the start of a run; the run
records the concrete values in run.json:

    fast bf16 hardware : --precision bf16-mixed (autocast: matmuls in bf16, reductions and the
                         optimiser in fp32), and
                         --dtype bfloat16 when the base weights are frozen (LoRA, --freeze backbone):
                             they are only read, so bf16 halves their memory and bandwidth;
                         --dtype float32 when they train (--full): fp32 master weights, so small
                             AdamW updates are not rounded away.
    elsewhere          : --precision 32-true, --dtype float32.

LoRA factors and task heads always train in fp32 (lightft/runs/backbone.py upcasts LoRA factors a
bf16 base would otherwise give them), and AdamW keeps its state in the parameters' dtype, so the
optimiser state is fp32 too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

# torch is imported inside the functions: lightft/options.py reads the choices below, and building the
# CLI must not import torch.

PRECISIONS = ("auto", "32-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true")
DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANT_SCHEMES = ("none", "nf4", "q4_1")  # --quantize: how the frozen base is stored (lightft/quant)
FAST_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The feature flags of the first CPU in /proc/cpuinfo (empty where there is no such file)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_has_fast_bf16(flags: Optional[Iterable[str]] = None) -> bool:
    """True on a CPU with native bf16 matmuls (AMX-BF16 or AVX-512-BF16).

    `flags`: CPU feature flags (default: /proc/cpuinfo); where the file says nothing (not Linux), torch's
    own probe of the CPU answers."""
    found = set(flags) if flags is not None else cpu_flags()
    if found:
        return any(f in found for f in FAST_BF16_CPU_FLAGS)
    import torch

    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None)
    return any(bool(p()) for p in probe if p is not None)


def device_type(accelerator: str) -> str:
    """cpu | cuda | other, for --accelerator cpu | gpu | cuda | auto | ... (auto: CUDA when there is one)."""
    import torch

    acc = accelerator.lower()
    if acc == "cpu":
        return "cpu"
    if acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available()):
        return "cuda"
    if acc == "auto":
        mps = getattr(torch.backends, "mps", None)
        return "other" if mps is not None and mps.is_available() else "cpu"
    return "other"


def fast_bf16(accelerator: str, cpu_flag_set: Optional[Iterable[str]] = None) -> bool:
    """Whether bf16 runs fast on the device `accelerator` picks."""
    import torch

    kind = device_type(accelerator)
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if kind == "cpu":
        return cpu_has_fast_bf16(cpu_flag_set)
    return False  # MPS and others: fp32, the safe choice


def resolve_precision(precision: str, accelerator: str, cpu_flag_set: Optional[Iterable[str]] = None) -> str:
    """--precision auto -> bf16-mixed on fast-bf16 hardware, else 32-true; other values unchanged."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if fast_bf16(accelerator, cpu_flag_set) else "32-true"


def pure_bf16_training_warning(precision: str, base_trains: bool) -> Optional[str]:
    """The warning for a run that trains base weights under bf16-true, else None.

    Lightning's bf16-true casts the whole module, so the trained weights themselves are bf16 (8
    significant bits): an AdamW step smaller than about 0.4 % of a weight rounds away to nothing.
    Measured (SmolLM2 full fine-tuning on the medical abstracts, 100 steps at lr 1e-4, held-out
    perplexity from 27.5): 21.4 under bf16-true, 18.3 under bf16-mixed, in about the same time.
    It is allowed (it halves the memory of weights and optimiser state), but never silently."""
    if not (base_trains and precision == "bf16-true"):
        return None
    return ("warning: --precision bf16-true with trained base weights (--full) keeps them in bf16: AdamW "
            "updates smaller than ~0.4 % of a weight are rounded away; --precision bf16-mixed keeps fp32 "
            "master weights")


def resolve_dtype(dtype: str, precision: str, base_trains: bool) -> str:
    """--dtype auto -> bfloat16 for frozen base weights under a bf16 precision, else float32.

    `precision` is the resolved one; `base_trains`: some base weight gets gradients (--full)."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if precision.startswith("bf16") and not base_trains else "float32"

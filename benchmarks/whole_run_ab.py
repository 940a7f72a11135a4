"""A/B, in one process and interleaved, of each change issue 18 made to the work around the training steps.

Each A/B runs the old way (A) and the new way (B) in turns, `--reps` times each, and prints the best
and median seconds of both (best: what the machine can do; a busy machine slows some repetitions):

    probe       the matmul-peak probe at the start of training: 2048³ for 0.4 s (A) vs 1024³ for 0.25 s (B)
    limit       --limit-train / --limit-val with --val: tokenise every record, then cut (A) vs stop at the limit (B)
    first-build a first run's data: read back the cache just written (A) vs keep what was built (B)
    best-ckpt   best.ckpt of a full fine-tune: weights + AdamW state, fsynced (A) vs weights only, not fsynced (B)
    validation  the validation pass, file order (A) vs longest first (B)
    grouping    one epoch of training steps, random batches (A) vs length-grouped batches (B)
    dropout     one epoch of full fine-tuning steps under bf16 autocast (MiniLM's hidden dropout 0.1):
                torch's dropout (A) vs lightft/kernels/dropout.py (B)
    attention   the same epoch (cheap dropout in both): SDPA (A) vs kernels/attention.py's explicit scores (B)
    clip        the same epoch (B of the above): clip_grad_norm_ then AdamW (A) vs the clip inside the fused
                AdamW's pass, tasks/optim.clip_in_step (B); --grad-clip 1
    malloc      the same epoch (B of the above): glibc's default malloc settings (A) vs
                train/allocator.reuse_freed_memory (B)

    python benchmarks/whole_run_ab.py --threads 1 [--only probe,limit] [--reps 3]

SST-2 (../shared/data or $LIGHTFT_DATA) and the packaged MiniLM; Alpaca and SmolLM2 for `limit --task instruct`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import torch  # noqa: E402

DATA = Path(os.environ.get("LIGHTFT_DATA", common.SHARED_DATA))


def ab(name: str, a: Callable[[], Any], b: Callable[[], Any], reps: int) -> None:
    times: dict[str, list[float]] = {"A": [], "B": []}
    for r in range(reps):
        for side, fn in (("A", a), ("B", b)) if r % 2 == 0 else (("B", b), ("A", a)):
            start = time.perf_counter()
            fn()
            times[side].append(time.perf_counter() - start)
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"| {name} | {best['A']:.3f} | {best['B']:.3f} | {med['A']:.3f} | {med['B']:.3f} | "
          f"{med['A'] / med['B']:.2f}× | {os.getloadavg()[0]:.1f} |", flush=True)


def datamodule(opts: Any, task: str = "classify") -> Any:
    from lightft.tokenizer import load_tokenizer
    from lightft.train.registry import get_task

    model = common.minilm_dir() if task == "classify" else common.smollm2_dir()
    files = {"classify": ("sst2/train.jsonl", "sst2/validation.jsonl"),
             "instruct": ("alpaca/train.json", "alpaca/validation.json")}[task]
    return get_task(task).datamodule(load_tokenizer(str(model)), opts, train_file=str(DATA / files[0]),
                                     val_file=str(DATA / files[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="probe,limit,first-build,best-ckpt,validation,grouping,dropout,"
                                       "attention,clip,malloc")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--task", choices=("classify", "instruct"), default="classify", help="for `limit`")
    p.add_argument("--limit-train", type=int, default=256)
    p.add_argument("--limit-val", type=int, default=128)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from lightft.checkpoint import load_model
    from lightft.options import Options
    from lightft.runs.checkpoint_file import atomic_torch_save
    from lightft.train.flops import matmul_peak

    only = set(a.only.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="lightft-ab-"))
    os.environ["LIGHTFT_CACHE"] = str(tmp / "cache")
    print(f"{common.machine_info()['cpu']}, {a.threads} thread(s), load {os.getloadavg()[0]:.1f}, reps {a.reps}\n")
    print("| A/B | A best s | B best s | A median s | B median s | A / B (median) | load |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    if "probe" in only:
        ab("matmul probe", lambda: matmul_peak(torch.float32, n=2048, seconds=0.4),
           lambda: matmul_peak(torch.float32, n=1024, seconds=0.25), a.reps)
    if "limit" in only:
        opts = Options(limit_train=a.limit_train, limit_val=a.limit_val, cache=False, max_length=128)

        def build(cut_after: bool) -> None:
            dm = datamodule(opts, a.task)
            if cut_after:
                dm.build_limit = lambda split: None  # the old way: every record, then the slice in setup
            dm.setup("fit")
            assert len(dm.datasets["train"]) == a.limit_train
        ab(f"{a.task} --limit-train {a.limit_train} --limit-val {a.limit_val}", lambda: build(True),
           lambda: build(False), a.reps)
    if "first-build" in only:
        def first(read_back: bool) -> None:
            for f in (tmp / "cache").rglob("*.pt"):
                f.unlink()
            dm = datamodule(Options(max_length=128))
            dm.prepare_data()
            if read_back:
                dm._loaded.clear()  # the old way: setup reads the cache prepare_data has just written
            dm.setup("fit")
        ab("first run, sst2 20k + 2k (build + cache)", lambda: first(True), lambda: first(False), a.reps)
    if only & {"best-ckpt", "validation", "grouping", "dropout", "attention", "clip", "malloc"}:
        model = load_model(str(common.minilm_dir()))
        params = [p for p in model.parameters()]
        state = {"state_dict": {k: v.clone() for k, v in model.state_dict().items()}}
        full = {**state, "optimizer_states": [{"state": {i: {"exp_avg": torch.randn_like(p), "exp_avg_sq":
                                                                torch.rand_like(p)} for i, p in enumerate(params)}}]}
        if "best-ckpt" in only:
            ab("best.ckpt, MiniLM full fine-tune", lambda: atomic_torch_save(full, tmp / "a.ckpt", durable=True),
               lambda: atomic_torch_save(state, tmp / "b.ckpt", durable=False), a.reps)
        if only & {"validation", "grouping", "dropout", "attention", "clip", "malloc"}:
            from lightft.tasks.classify import ClassificationModule

            opts = Options(lora=False, batch_size=32, max_length=128, limit_train=512, limit_val=512,
                           cache=False)
            dm = datamodule(opts)
            dm.setup("fit")
            module = ClassificationModule(model, opts, **dm.task_args())

            def validate(by_length: bool) -> None:
                with torch.inference_mode():
                    for batch in dm._loader("val", train=False, by_length=by_length):
                        module(batch)
            if "validation" in only:
                ab("validation pass, sst2 512, batch 64", lambda: validate(False), lambda: validate(True), a.reps)
            if "grouping" in only:
                opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

                def epoch(grouped: bool) -> None:
                    dm.opts.group_by_length = grouped
                    for batch in dm.train_loader(dm.datasets["train"], 32, {"num_workers": 0}):
                        module.loss(batch, module(batch)).backward()
                        opt.step()
                        opt.zero_grad()
                ab("training epoch, sst2 512, batch 32", lambda: epoch(False), lambda: epoch(True), a.reps)
            if only & {"dropout", "attention", "clip", "malloc"}:
                import contextlib

                from lightft.kernels.attention import attend
                from lightft.kernels.dropout import fast_dropout
                from lightft.model import dropout, sdpa_attention
                from lightft.tasks.optim import clip_in_step
                from lightft.train.allocator import reuse_freed_memory

                model.requires_grad_(True)
                opt = torch.optim.AdamW(module.parameters(), lr=1e-5, fused=True)
                dm.opts.group_by_length = True

                def autocast_epoch(drop: Callable[..., torch.Tensor] = fast_dropout,
                                   attention: Callable[..., torch.Tensor] = sdpa_attention,
                                   clip: bool = False, fold_clip: bool = False, keep_memory: bool = False) -> None:
                    model.ops.drop, model.ops.attend = drop, attention
                    with reuse_freed_memory() if keep_memory else contextlib.nullcontext():
                        for batch in dm.train_loader(dm.datasets["train"], 32, {"num_workers": 0}):
                            with torch.autocast("cpu", dtype=torch.bfloat16):
                                loss = module.loss(batch, module(batch))
                            loss.backward()
                            if fold_clip:
                                clip_in_step(opt, 1.0)
                            elif clip:
                                torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
                            opt.step()
                            opt.grad_scale = None
                            opt.zero_grad()
                name = "full fine-tuning epoch, bf16 autocast, sst2 512, batch 32"
                if "dropout" in only:
                    ab(f"{name}: dropout", lambda: autocast_epoch(dropout), lambda: autocast_epoch(fast_dropout), a.reps)
                if "attention" in only:
                    ab(f"{name}: attention", lambda: autocast_epoch(attention=sdpa_attention),
                       lambda: autocast_epoch(attention=attend), a.reps)
                if "clip" in only:
                    ab(f"{name}: clip", lambda: autocast_epoch(attention=attend, clip=True),
                       lambda: autocast_epoch(attention=attend, fold_clip=True), a.reps)
                if "malloc" in only:
                    ab(f"{name}: malloc", lambda: autocast_epoch(attention=attend, fold_clip=True),
                       lambda: autocast_epoch(attention=attend, fold_clip=True, keep_memory=True), a.reps)

if __name__ == "__main__":
    main()

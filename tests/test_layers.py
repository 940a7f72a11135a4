"""The layers stay one-way (import-linter's contracts in .importlinter), and a finished run is loaded and
used for generation without starting Lightning."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lightft.cli.main import cli
from lightft.evaluate import run_module
from lightft.runs import load_run
from tiny_decoder import SIMPLE_CHAT, tiny_decoder

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    res = subprocess.run([exe, "--config", str(REPO / ".importlinter")], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:]


@pytest.fixture(scope="module")
def instruct_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("layers")
    model = tiny_decoder(tmp, "llama", chat_template=SIMPLE_CHAT)
    alpaca = tmp / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": f"Say {w}", "input": "", "output": w} for w in ["yes", "no"] * 6]))
    res = CliRunner().invoke(cli, ["train", "instruct", "--model", str(model), "--train", str(alpaca), "--out",
                                   str(tmp / "run"), "--lora-targets", "all-linear", "--max-steps", "2",
                                   "--batch-size", "4", "--no-progress", "--no-cache", "--lr", "1e-2",
                                   "--max-length", "64"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return tmp / "run"


LIGHTNING_FREE = """
import sys
from lightft.generate import SamplingOptions, generate_text, load_for_generation
from lightft.runs import load_run
run = load_run(sys.argv[1])
model, tok, template = load_for_generation(sys.argv[1])
gens = generate_text(model, tok, ["Say yes"], SamplingOptions(max_new_tokens=4), template)
assert gens and gens[0].token_ids is not None
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "lightning_fabric", "torchmetrics"))
print("HEAVY", heavy)
"""


def test_load_run_and_generation_never_import_lightning(instruct_run):
    res = subprocess.run([sys.executable, "-c", LIGHTNING_FREE, str(instruct_run)], cwd=REPO, capture_output=True,
                         text=True, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "HEAVY []" in res.stdout, res.stdout


def test_load_run_equals_the_lightning_task_module(instruct_run):
    """load_run's backbone is the trained one: same outputs as the task module eval/predict use."""
    run = load_run(str(instruct_run))
    module = run_module(str(instruct_run)).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        torch.testing.assert_close(run.backbone(ids).logits, module.backbone(ids).logits, rtol=0, atol=0)
    trained = [n for n, p in run.backbone.named_parameters() if n.endswith("lora_B")]
    assert trained and any(run.backbone.get_parameter(n).abs().sum() > 0 for n in trained)
    assert run.task == "instruct" and run.task_state["template"] == "chat"

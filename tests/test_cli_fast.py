"""The CLI starts fast (no torch for --help / --version), lists its commands truthfully, speaks in one-line
errors, keeps library noise behind --verbose, and has --threads wherever it computes."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from tests.tiny_run import REPO, make_tiny_model, run_cli, write_classify_jsonl

PROBE = """
import sys
from lightft.cli.main import main
try:
    main({args!r})
except SystemExit as e:
    assert e.code in (0, None), e.code
heavy = sorted(m for m in ("torch", "torch._dynamo", "lightning", "numpy", "transformers") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_help_and_version_import_no_torch(args):
    res = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True,
                         cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "HEAVY=", res.stdout
    assert ("Commands:" in res.stdout) if args == ["--help"] else ("lightft, version" in res.stdout)


def test_public_api_loads_on_first_use():
    code = ("import sys, lightft; assert 'torch' not in sys.modules; from lightft import load_model, apply_lora; "
            "assert 'torch' in sys.modules and callable(load_model) and 'load_tokenizer' in dir(lightft)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]


def test_command_table_matches_the_commands():
    """`lightft --help` lists commands without importing them; each line must be the command's own summary."""
    from lightft.cli.main import COMMANDS

    for name, (module, summary) in COMMANDS.items():
        command = importlib.import_module(f"lightft.cli.{module}").command
        assert command.name == name
        assert command.get_short_help_str(limit=1000) == summary, name


def test_usage_errors_are_one_clean_line(capsys):
    from lightft.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["eval", "classify", "--data", "x.jsonl"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: Missing option '--model'. See 'lightft eval classify --help'."]
    with pytest.raises(SystemExit):
        main(["train", "classify", "--lr", "fast"])
    line = capsys.readouterr().err.strip()
    assert ".;" not in line and line.endswith("See 'lightft train classify --help'.") and "\n" not in line


@pytest.mark.parametrize("args", [["generate"], ["fewshot"], ["convert", "gguf"], ["export"], ["demo"]])
def test_computing_commands_take_threads(args):
    from click.testing import CliRunner

    from lightft.cli.main import cli

    res = CliRunner().invoke(cli, [*args, "--help"])
    assert res.exit_code == 0 and "--threads" in res.output


def test_threads_option_sets_torch_threads(tmp_path):
    torch = pytest.importorskip("torch")
    from click.testing import CliRunner

    from lightft.cli.main import cli

    before = torch.get_num_threads()
    try:
        res = CliRunner().invoke(cli, ["convert", "gguf", str(tmp_path / "missing.gguf"), str(tmp_path / "o"),
                                       "--threads", "1"])
        assert torch.get_num_threads() == 1 and res.exit_code != 0  # set before the command ran
        res = CliRunner().invoke(cli, ["convert", "gguf", "x.gguf", str(tmp_path / "o"), "--threads", "0"])
        assert res.exit_code == 2 and "--threads" in res.output
    finally:
        torch.set_num_threads(before)


def test_lightning_noise_only_with_verbose(tmp_path):
    model = make_tiny_model(tmp_path / "model")
    data = write_classify_jsonl(tmp_path / "train.jsonl", 24)
    args = ["train", "classify", "--model", model, "--train", data, "--max-steps", "1", "--batch-size", "8",
            "--no-progress", "--full", "--threads", "1"]
    noise = ("GPU available", "TPU available", "Loading `train_dataloader` to estimate", "LeafSpec")
    quiet = run_cli([*args, "--out", tmp_path / "quiet"], tmp_path / "cache", timeout=300)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert not [n for n in noise if n in quiet.stderr], quiet.stderr
    assert json.loads(quiet.stdout.strip().splitlines()[-1])["steps"] == 1
    loud = run_cli(["--verbose", *args, "--out", tmp_path / "loud"], tmp_path / "cache", timeout=300)
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert "GPU available" in loud.stderr and "Loading `train_dataloader` to estimate" in loud.stderr

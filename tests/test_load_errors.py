"""Bad model folders give one clear LightftError naming what is wrong; the CLI prints it as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from lightft import LightftError, load_model, load_tokenizer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def llama_dir(hf_folder):
    return hf_folder("llama")[1]


def test_missing_folder(tmp_path):
    with pytest.raises(LightftError, match="model folder not found"):
        load_model(tmp_path / "nope")


def test_missing_config(llama_dir):
    (llama_dir / "config.json").unlink()
    with pytest.raises(LightftError, match="missing config.json"):
        load_model(llama_dir)


def test_invalid_config_json(llama_dir):
    (llama_dir / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(LightftError, match=r"config.json:1: malformed JSON"):
        load_model(llama_dir)


def test_missing_weights(llama_dir):
    (llama_dir / "model.safetensors").unlink()
    with pytest.raises(LightftError, match="missing model.safetensors or model.safetensors.index.json; found: config"):
        load_model(llama_dir)


def test_missing_shard(hf_folder):
    _, path = hf_folder("llama", shard_size="20KB")
    shard = sorted(path.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(LightftError, match=f"names shard {shard.name} which is missing"):
        load_model(path)


def test_missing_tokenizer(llama_dir):
    with pytest.raises(LightftError, match="missing tokenizer.json"):
        load_tokenizer(llama_dir)


def test_unknown_model_type(llama_dir):
    cfg = json.loads((llama_dir / "config.json").read_text())
    cfg.update(model_type="mamba", architectures=["MambaForCausalLM"])
    (llama_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LightftError, match="model_type 'mamba' is not supported; supported model types: bert, gpt2"):
        load_model(llama_dir)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "cut_data"])
def test_corrupt_safetensors(llama_dir, damage):
    file = llama_dir / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes({"truncated": data[:100], "garbage": b"\xff" * 4096, "empty": b"",
                      "cut_data": data[: len(data) // 2]}[damage])
    with pytest.raises(LightftError, match="model.safetensors: .*(truncated or corrupt|is corrupt)"):
        load_model(llama_dir)


def test_wrong_shape_names_key_and_both_shapes(llama_dir):
    file = llama_dir / "model.safetensors"
    state = load_file(str(file))
    key = "model.layers.1.mlp.up_proj.weight"
    state[key] = state[key][:, :16].contiguous()  # (40, 32) -> (40, 16)
    save_file(state, str(file))
    with pytest.raises(LightftError, match=rf"shape mismatch {key}: checkpoint \(40, 16\) vs model \(40, 32\)"):
        load_model(llama_dir)


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "lightft", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_cli_inspect_bad_folder_prints_one_line(llama_dir):
    (llama_dir / "model.safetensors").write_bytes(b"\x00" * 10)
    res = _run_cli("inspect", str(llama_dir))
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "safetensors" in lines[0], res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_cli_inspect_reports_shape_problem(llama_dir):
    """inspect loads non-strictly: a mis-shaped tensor is listed as a problem, not a crash."""
    from lightft.cli.inspect_cmd import summarise

    file = llama_dir / "model.safetensors"
    state = load_file(str(file))
    state["model.norm.weight"] = state["model.norm.weight"][:8].contiguous()
    save_file(state, str(file))
    (llama_dir / "tokenizer.json").write_text("{}")
    info = summarise(str(llama_dir))
    assert "shape mismatch model.norm.weight: checkpoint (8,) vs model (32,)" in info["problems"]
    assert any("tokenizer.json: cannot be parsed" in p for p in info["problems"])

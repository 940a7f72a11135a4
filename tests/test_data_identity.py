"""A run knows the data it trained on (lightft/runs/data_identity.py): run.json holds each data file's sha256,
and `--resume` on changed data is refused naming the file, unless --allow-data-change; a change that
would reshape the trained head (a new label) is refused even then. The digest itself (streamed sha256, shared
with the token cache): tests/test_input_safety.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from lightft.cli.main import main
from lightft.errors import LightftError
from lightft.runs.data_identity import check_same_data, data_changes, data_hashes
from tests.tiny_run import make_tiny_model, write_classify_jsonl


def test_a_same_size_rewrite_with_the_old_mtime_is_a_change(tmp_path):
    import os

    f = tmp_path / "train.jsonl"
    f.write_text('{"text": "good", "label": "pos"}\n')
    before = data_hashes({"train": [f]})
    stat = f.stat()
    f.write_text('{"text": "baad", "label": "neg"}\n')  # same size
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the mtime put back (cp -p, git checkout)
    now = data_hashes({"train": [f]})
    assert data_changes(before, now) and str(f) in data_changes(before, now)[0]
    with pytest.raises(LightftError, match=rf"--resume on other data: {f} \(train\) changed since the run started.*"
                                           "--allow-data-change"):
        check_same_data({"data_files": before}, now, tmp_path, allow=False)
    assert check_same_data({"data_files": before}, now, tmp_path, allow=True) == data_changes(before, now)
    assert check_same_data({}, now, tmp_path, allow=False) == []  # a run from before data hashes


def test_files_added_to_or_gone_from_a_data_folder_are_named(tmp_path):
    before = {"train": {"docs/a.txt": "sha256:1", "docs/b.txt": "sha256:2"}}
    now = {"train": {"docs/a.txt": "sha256:1", "docs/c.txt": "sha256:3"}}
    assert data_changes(before, now) == ["docs/b.txt (train) is gone", "docs/c.txt (train) is new"]


def test_resume_refuses_changed_data_naming_the_file_unless_allowed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIGHTFT_CACHE", str(tmp_path / "cache"))
    make_tiny_model(tmp_path / "bert")
    train = write_classify_jsonl(tmp_path / "train.jsonl", 24)
    write_classify_jsonl(tmp_path / "val.jsonl", 8, seed=1)
    run = tmp_path / "run"
    args = ["train", "classify", "--model", str(tmp_path / "bert"), "--train", str(train), "--val",
            str(tmp_path / "val.jsonl"), "--out", str(run), "--full", "--batch-size", "8", "--threads", "1",
            "--no-progress"]
    main([*args, "--max-steps", "2"])
    info = json.loads((run / "run.json").read_text())
    assert info["data_files"]["train"] == {str(train): "sha256:" + hashlib.sha256(train.read_bytes()).hexdigest()}
    assert info["status"] == "finished"

    lines = train.read_text().splitlines()
    train.write_text("\n".join(lines[1:] + lines[:1]) + "\n")  # the same records in another order: same size
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main([*args, "--max-steps", "3", "--resume"])
    assert stop.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"--resume on other data: {train} (train) changed since the run started" in line, line
    assert json.loads((run / "run.json").read_text()) == info  # refused before anything changed

    main([*args, "--max-steps", "3", "--resume", "--allow-data-change"])
    after = json.loads((run / "run.json").read_text())
    assert str(train) in after["resumed"][-1]["data_changed"][0]
    assert after["data_files"]["train"][str(train)] != info["data_files"]["train"][str(train)]

    train.write_text(train.read_text() + json.dumps({"text": "fine music", "label": "meh"}) + "\n")  # a new class
    with pytest.raises(SystemExit):
        main([*args, "--max-steps", "4", "--resume", "--allow-data-change"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--resume on data with another label_names" in line and "start a new run" in line, line

"""The bad-input corpus machinery shared by tests/test_bad_inputs*.py: the folder of models, runs and
damaged copies every case points into, and the one check every case must pass.

A case is `(id, argv, words)`: argv may name `{model}`, `{run}`, `{d}` (the fixture folder),
`{bad}` (tests/bad_inputs/) and `{out}` (a path that must not exist afterwards). The check: exit
code non-zero, stderr ends in exactly one `error:` line that holds `words`, has no control
characters (everything quoted from a file is escaped), no traceback, nothing written to `{out}`,
and no file of the fixture folder changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any, Callable

import pytest

from lightft.cli.main import main
from tests.tiny_run import REPO, make_tiny_model, write_classify_jsonl

BAD = Path(__file__).parent / "bad_inputs"


def build_env(d: Path, extra: Callable[[Path, dict[str, str]], None] | None = None) -> dict[str, str]:
    """A tiny model, good data and one finished classify run in `d`; `extra(d, env)` adds a file's own cases."""
    model = make_tiny_model(d / "model")
    write_classify_jsonl(d / "train.jsonl", 24)
    write_classify_jsonl(d / "val.jsonl", 8, seed=1)
    main(["train", "classify", "--model", str(model), "--train", str(d / "train.jsonl"), "--val", str(d / "val.jsonl"),
          "--out", str(d / "run"), "--full", "--max-steps", "2", "--batch-size", "8", "--no-progress"])
    env = {"model": str(model), "train": str(d / "train.jsonl"), "val": str(d / "val.jsonl"), "run": str(d / "run"),
           "bad": str(BAD), "d": str(d)}
    if extra is not None:
        extra(d, env)
    return env


TRAIN = ["train", "classify", "--model", "{model}", "--train", "{train}", "--out", "{out}", "--full", "--no-progress",
         "--max-steps", "1"]


def train_with(*extra: str, data: str = "{train}", task: str = "classify", model: str = "{model}") -> list[str]:
    """`lightft train TASK` on the tiny model and good data, with `data` / `model` / extra flags replaced."""
    args = [task if a == "classify" else data if a == "{train}" else model if a == "{model}" else a for a in TRAIN]
    return args + list(extra)


def model_variant(d: Path, name: str, config: dict[str, Any] | None = None, drop: tuple[str, ...] = ()) -> Path:
    """A copy of the fixture's tiny model with config.json keys replaced (None: removed) or files dropped."""
    folder = d / name
    shutil.copytree(d / "model", folder)
    if config:
        path = folder / "config.json"
        cfg = json.loads(path.read_text(encoding="utf-8"))
        for key, value in config.items():
            if value is None:
                cfg.pop(key, None)
            else:
                cfg[key] = value
        path.write_text(json.dumps(cfg), encoding="utf-8")
    for name_ in drop:
        (folder / name_).unlink()
    return folder


def snapshot(root: Path) -> dict[str, int]:
    """Every path under `root` with its modification time (the token cache may grow: it is not output)."""
    return {str(p): p.lstat().st_mtime_ns for p in root.rglob("*") if "cache" not in p.relative_to(root).parts}


def fill(argv: list[str], values: dict[str, str]) -> list[str]:
    return [a.format(**values) for a in argv]


def check_error_output(code: Any, err: str, expected: str) -> str:
    """Non-zero exit and one escaped `error:` line, the last one, holding `expected`; returns that line."""
    assert code not in (0, None), err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], err[-2000:]
    assert expected in errors[0], errors[0]
    assert not any(unicodedata.category(c) in ("Cc", "Cf") for c in errors[0]), repr(errors[0])
    return errors[0]


def check_case(env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str],
               expected: str) -> str:
    """Run one case in-process and apply every check of the module docstring."""
    out = tmp_path / "out"
    args = fill(argv, {**env, "out": str(out)})
    before = snapshot(Path(env["d"]))
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    line = check_error_output(exit_info.value.code, capsys.readouterr().err, expected)
    assert not out.exists(), "partial output left behind"
    assert before == snapshot(Path(env["d"])), "an existing file was changed"
    return line


DRIVER = """
import contextlib, io, json, sys
from lightft.cli.main import main
results = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def run_without_root_powers(cases: list[list[str]], cache: Path) -> list[tuple[int, str]]:
    """(exit code, stderr) of `lightft ARGS` for each case, run in one subprocess that file permissions apply to.

    As root (containers), permission bits are ignored, so the process drops the two capabilities
    that let root read any file (`setpriv`, util-linux); without setpriv such a test is skipped.
    One process for all cases: torch is imported once.
    """
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: file permissions cannot be tested")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "LIGHTFT_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([*prefix, sys.executable, "-c", DRIVER, json.dumps(cases)], env=env, capture_output=True,
                         text=True, timeout=600, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    return [(code, err) for code, err in json.loads(res.stdout.splitlines()[-1])]

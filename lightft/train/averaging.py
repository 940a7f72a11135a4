"""Probabilities of several trained runs averaged record by record, the file's line numbers pairing them up:
distillation's soft targets (lightft/train/teachers.py) and ensembles (lightft/ensemble.py) are both this mean."""

from __future__ import annotations

from typing import Callable, Iterable

from lightft.errors import LightftError

ByLine = dict[int, list[float]]  # file line -> probability per label, in one fixed label order


def average_by_line(runs: Iterable[tuple[str, ByLine]], mismatch: Callable[[str, int, int], str]) -> ByLine:
    """The mean over `runs` ((name, probabilities by line) each) of every line's probabilities. A run whose
    lines differ from those before it is an error: `mismatch(name, its line count, the count before)` words it."""
    total: ByLine = {}
    count = 0
    for name, probs in runs:
        if count and probs.keys() != total.keys():
            raise LightftError(mismatch(name, len(probs), len(total)))
        for line, p in probs.items():
            total[line] = [a + b for a, b in zip(total.get(line, [0.0] * len(p)), p)]
        count += 1
    return {line: [x / count for x in p] for line, p in total.items()}

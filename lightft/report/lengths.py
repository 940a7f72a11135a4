"""Token-length summaries of each data split, kept in run.json so a report can draw their histograms.

Lengths are those of the examples as the model sees them (after --max-length truncation, or packed
rows for lm); how many were over the limit is counted separately in the split's statistics.
"""

from __future__ import annotations

import math
from typing import Any


def length_summary(lengths: list[int], limit: int, bins: int = 24) -> dict[str, Any]:
    """n, mean, median, 95th percentile, max, the --max-length limit and a histogram of `bins`
    equal integer-width bins from 0 to the longest example: edges (bins + 1) and counts (bins)."""
    if not lengths:
        return {"n": 0, "limit": limit, "edges": [], "counts": []}
    ordered = sorted(lengths)
    longest = ordered[-1]
    width = max(1, math.ceil((longest + 1) / bins))
    n_bins = math.ceil((longest + 1) / width)
    counts = [0] * n_bins
    for x in lengths:
        counts[x // width] += 1
    return {
        "n": len(lengths),
        "mean": round(sum(lengths) / len(lengths), 2),
        "p50": ordered[len(ordered) // 2],
        "p95": ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)],
        "max": longest,
        "limit": limit,
        "edges": [i * width for i in range(n_bins + 1)],
        "counts": counts,
    }

"""click parameter types for numbers with a range: NaN, infinity and out-of-range values are one line naming the flag.

click's own `FloatRange` lets NaN through (every comparison with NaN is false), and a plain `int`
lets `--batch-size 0` through to fail later with a traceback. `Bounded` converts, checks that the
value is finite and inside its range, and lets click report `Invalid value for '--temperature': ...`
before any model is loaded.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import click


class Bounded(click.ParamType):
    """An int or float in [lo, hi] (either end open with lo_open / hi_open; None: unbounded), always finite."""

    def __init__(self, kind: type, lo: Optional[float] = None, hi: Optional[float] = None,
                 lo_open: bool = False, hi_open: bool = False):
        assert kind in (int, float)
        self.kind, self.lo, self.hi, self.lo_open, self.hi_open = kind, lo, hi, lo_open, hi_open
        self.name = kind.__name__

    def describe(self) -> str:
        left = "(" if self.lo_open else "["
        right = ")" if self.hi_open else "]"
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        if self.hi is None and not self.lo_open and self.lo is not None:
            return f"at least {lo}"
        return f"in {left}{lo}, {hi}{right}"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        if isinstance(value, self.kind) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = self.kind(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a{'n integer' if self.kind is int else ' number'}", param, ctx)
        if self.kind is float and not math.isfinite(number):
            self.fail(f"{value} is not a finite number", param, ctx)
        too_low = self.lo is not None and (number < self.lo or (self.lo_open and number == self.lo))
        too_high = self.hi is not None and (number > self.hi or (self.hi_open and number == self.hi))
        if too_low or too_high:
            self.fail(f"{number} is out of range; it must be {self.describe()}", param, ctx)
        return number


SEED_MAX = 2**63 - 1
POSITIVE = Bounded(int, 1)  # counts: batch sizes, tokens, threads, items
NON_NEGATIVE = Bounded(int, 0)
SEED = Bounded(int, 0, SEED_MAX)

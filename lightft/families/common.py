"""Helpers shared by the family modules: typed, range-checked reads of config.json keys, and the task
classes a family exports as.

A config.json is input like any data file: a dimension of 0, -4, 32.0 or "32", a dropout of 5, or a
layer count of 100000000 must stop with one line naming the key before any module is built (a
zero width divides by zero, a huge layer count builds modules for minutes). The limits are far
beyond any real checkpoint (the largest open models have ~130 layers and widths of ~16k) and exist
to turn a typo or a hostile file into a message instead of a hang.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from lightft.errors import LightftError, excerpt

_MISSING = object()

# Upper bounds "within reason" per kind of dimension (see the module docstring).
LIMITS = {"layers": 1024, "width": 131_072, "intermediate": 1_048_576, "heads": 4096, "vocab": 4_194_304,
          "positions": 16_777_216, "types": 1024}
MAX_PARAMETERS = 2e12  # the whole model, estimated from its dimensions


def require(hf: dict[str, Any], key: str, source: str = "config.json") -> Any:
    """A config key the family cannot do without; a clear error names it."""
    if key not in hf or hf[key] is None:
        raise LightftError(f"{source}: missing required key {key!r} for model_type {hf.get('model_type')!r}")
    return hf[key]


def integer(hf: dict[str, Any], key: str, default: Any = _MISSING, lo: int = 1, hi: Optional[int] = None,
            source: str = "config.json") -> int:
    """hf[key] as a whole number in [lo, hi]; missing -> `default` (required when there is none)."""
    value = hf.get(key)
    if value is None:
        if default is _MISSING:
            return require(hf, key, source)
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise LightftError(f"{source}: {key} must be a whole number, not {excerpt(value, 40)}")
    if value < lo or (hi is not None and value > hi):
        bound = f"at least {lo}" if hi is None else f"between {lo} and {hi:,}"
        raise LightftError(f"{source}: {key} = {value} is out of range; it must be {bound}")
    return value


def number(hf: dict[str, Any], key: str, default: float, lo: float = 0.0, hi: float = math.inf,
           hi_open: bool = False, lo_open: bool = False, source: str = "config.json") -> float:
    """hf[key] as a finite number in the given range (e.g. dropout in [0, 1), eps > 0)."""
    value = hf.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LightftError(f"{source}: {key} must be a finite number, not {excerpt(value, 40)}")
    if value < lo or (lo_open and value == lo) or value > hi or (hi_open and value == hi):
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise LightftError(f"{source}: {key} = {value} is out of range; it must be in {left}{lo:g}, {hi:g}{right}")
    return float(value)


def dropout(hf: dict[str, Any], key: str, default: float, source: str = "config.json") -> float:
    """A dropout probability: in [0, 1) (1 would zero every activation)."""
    return number(hf, key, default, 0.0, 1.0, hi_open=True, source=source)


def dim(hf: dict[str, Any], key: str, kind: str, default: Any = _MISSING, source: str = "config.json") -> int:
    """A model dimension: a whole number from 1 up to the limit of its kind (see LIMITS)."""
    return integer(hf, key, default, 1, LIMITS[kind], source)


def divides(part: tuple[str, int], whole: tuple[str, int], source: str = "config.json") -> None:
    """`whole` must split evenly into `part` pieces (width into heads, heads into kv groups)."""
    (pk, p), (wk, w) = part, whole
    if w % p:
        raise LightftError(f"{source}: {wk} = {w} is not divisible by {pk} = {p}; every head needs the same width")


def activation_name(hf_act: Any, source: str = "config.json") -> str:
    """Map Hugging Face activation names onto the four the core implements."""
    table = {
        "gelu": "gelu",
        "gelu_python": "gelu",
        "gelu_new": "gelu_tanh",
        "gelu_pytorch_tanh": "gelu_tanh",
        "gelu_fast": "gelu_tanh",
        "silu": "silu",
        "swish": "silu",
        "relu": "relu",
    }
    if not isinstance(hf_act, str) or hf_act not in table:
        raise LightftError(f"{source}: activation {excerpt(hf_act, 40)} is not supported; "
                           f"supported: {', '.join(table)}")
    return table[hf_act]


@dataclass(frozen=True)
class TaskClass:
    """The `transformers` class a lightft task exports as, and where each trained tensor goes in it.

    `keys` maps TaskModule state names (`head.*`, and `backbone.*` where the class keeps a backbone
    tensor elsewhere or not at all) to checkpoint keys; None drops the tensor (a class built without
    BERT's pooler, or without an LM head). Backbone tensors not listed are written by the family's
    KEY_MAP under `prefix`. A run maps onto the class only if every head tensor has a row here and
    its pooling (classify) is `pooling`.
    """

    architecture: str  # e.g. "BertForSequenceClassification"
    prefix: str  # the class's name for its backbone in checkpoint keys, e.g. "bert."
    keys: dict[str, Optional[str]] = field(default_factory=dict)
    pooling: Optional[str] = None  # classify: the pooling the class applies (pooler | last)
    labels: bool = False  # config.json carries num_labels / id2label / label2id
    needs_pad_id: bool = False  # last-token pooling: the class finds the last token by pad_token_id

    def head_keys(self) -> dict[str, str]:
        """TaskModule name -> checkpoint key of the tensors the class holds (dropped ones left out)."""
        return {ours: theirs for ours, theirs in self.keys.items() if theirs is not None}


def drops_lm_head(hf: dict[str, Any], task_classes: dict[str, dict[str, TaskClass]]) -> bool:
    """Whether config.json names a task class built without an LM head (a classifier export of a decoder)."""
    arch = (hf.get("architectures") or [None])[0]
    return any(tc.architecture == arch and tc.keys.get("backbone.lm_head.weight", "") is None
               for tc in task_classes.get(hf.get("model_type", ""), {}).values())


def head_key_patterns(task_classes: dict[str, dict[str, TaskClass]]) -> tuple[str, ...]:
    """Regexes of the task-head keys of every class: known, and skipped when a task export loads as a backbone."""
    keys = {theirs for by_task in task_classes.values() for tc in by_task.values()
            for theirs in tc.head_keys().values()}
    return tuple(sorted(rf"^{re.escape(k)}$" for k in keys))

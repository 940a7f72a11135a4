"""Helpers shared by the family modules: config readers and the task classes they export as."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from lightft.errors import LightftError


def require(hf: dict[str, Any], key: str, source: str = "config.json") -> Any:
    """A config key the family cannot do without; a clear error names it."""
    if key not in hf or hf[key] is None:
        raise LightftError(f"{source}: missing required key {key!r} for model_type {hf.get('model_type')!r}")
    return hf[key]


def activation_name(hf_act: str, source: str = "config.json") -> str:
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
    if hf_act not in table:
        raise LightftError(f"{source}: activation {hf_act!r} is not supported; supported: {', '.join(table)}")
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
    keys = {theirs for by_task in task_classes.values() for tc in by_task.values() for theirs in tc.head_keys().values()}
    return tuple(sorted(rf"^{re.escape(k)}$" for k in keys))

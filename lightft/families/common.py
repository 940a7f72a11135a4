"""Helpers shared by the family config readers."""

from __future__ import annotations

from typing import Any

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

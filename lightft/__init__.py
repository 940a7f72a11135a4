"""lightft: a small, readable fine-tuning trainer for transformer language models.

The public Python API is deliberately short; each name lives in the module that owns its job and
is imported on first use (PEP 562), so `import lightft` and `lightft --help` do not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "LightftError": "lightft.errors",
    "load_model": "lightft.checkpoint",
    "load_tokenizer": "lightft.tokenizer",
    "apply_lora": "lightft.lora",
    "merge_lora": "lightft.lora",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'lightft' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))

"""Family registry: `model_type` / `architectures` in config.json -> the family's reader and key map.

Adding a family = one module here with `MODEL_TYPES`, `read_config(hf) -> ModelConfig`,
`KEY_MAP`, `ARCHITECTURE` and `TASK_CLASSES` (the transformers task classes its exports load as,
lightft/task_heads.py), plus a parity test. Nothing is chosen from file or model names.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from lightft.errors import LightftError
from lightft.families import bert, gpt2, llama
from lightft.families.common import require  # noqa: F401  (re-exported)

FAMILIES: dict[str, ModuleType] = {"bert": bert, "gpt2": gpt2, "llama": llama}
MODEL_TYPES: dict[str, str] = {mt: name for name, mod in FAMILIES.items() for mt in mod.MODEL_TYPES}
ARCHITECTURE_HINTS = {"Bert": "bert", "Roberta": "bert", "GPT2": "gpt2", "Llama": "llama", "Mistral": "llama", "Qwen2": "llama"}


def family_for(hf_config: dict[str, Any], source: str = "config.json") -> ModuleType:
    """Pick the family from `model_type`, falling back to `architectures`."""
    model_type = hf_config.get("model_type")
    if model_type in MODEL_TYPES:
        return FAMILIES[MODEL_TYPES[model_type]]
    for arch in hf_config.get("architectures") or []:
        for hint, fam in ARCHITECTURE_HINTS.items():
            if arch.startswith(hint):
                return FAMILIES[fam]
    raise LightftError(
        f"{source}: model_type {model_type!r} is not supported; supported model types: "
        f"{', '.join(sorted(MODEL_TYPES))}"
    )


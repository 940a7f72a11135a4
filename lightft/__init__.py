"""lightft: a small, readable fine-tuning trainer for transformer language models.

The public Python API is deliberately short; each name lives in the module that owns its job.
"""

__version__ = "0.1.0"

from lightft.errors import LightftError  # noqa: E402
from lightft.checkpoint import load_model  # noqa: E402
from lightft.tokenizer import load_tokenizer  # noqa: E402
from lightft.lora import apply_lora, merge_lora  # noqa: E402

__all__ = ["LightftError", "apply_lora", "load_model", "load_tokenizer", "merge_lora", "__version__"]

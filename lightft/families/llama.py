"""Llama family (Llama 2/3, SmolLM, Mistral, Qwen2): RMSNorm, RoPE, SwiGLU, grouped-query attention."""

from __future__ import annotations

from typing import Any

from lightft.config import ModelConfig
from lightft.errors import LightftError, excerpt
from lightft.families.common import (TaskClass, activation_name, dim, divides, drops_lm_head, dropout,
                                     head_key_patterns, number)
from lightft.keymap import KeyMap

MODEL_TYPES = ("llama", "mistral", "qwen2")
ARCHITECTURE = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}

# Task heads in transformers' layout (its Generic*ForSequence/TokenClassification): `score`, without a
# bias for sequences (it reads the last token that is not the pad token: lightft's `last` pooling), and
# no LM head in the classifiers.
NO_LM_HEAD = {"backbone.lm_head.weight": None}
TASK_CLASSES = {
    model_type: {
        "classify": TaskClass(f"{name}ForSequenceClassification", "model.", {"head.out.weight": "score.weight",
                              **NO_LM_HEAD}, pooling="last", labels=True, needs_pad_id=True),
        "ner": TaskClass(f"{name}ForTokenClassification", "model.",
                         {"head.out.weight": "score.weight", "head.out.bias": "score.bias", **NO_LM_HEAD}, labels=True),
        "lm": TaskClass(f"{name}ForCausalLM", "model."),
        "instruct": TaskClass(f"{name}ForCausalLM", "model."),
    }
    for model_type, name in (("llama", "Llama"), ("mistral", "Mistral"), ("qwen2", "Qwen2"))
}

L = "layers.{i}."
KEY_MAP = KeyMap(
    rows=[
        ("embed_tokens.weight", "embed_tokens.weight", None),
        *[
            (L + src + "." + p, "layers.{i}." + dst + "." + p, None)
            for src, dst in [
                ("self_attn.q_proj", "attn.q_proj"),
                ("self_attn.k_proj", "attn.k_proj"),
                ("self_attn.v_proj", "attn.v_proj"),
                ("self_attn.o_proj", "attn.o_proj"),
                ("mlp.gate_proj", "mlp.gate_proj"),
                ("mlp.up_proj", "mlp.up_proj"),
                ("mlp.down_proj", "mlp.down_proj"),
            ]
            for p in ("weight", "bias")
        ],
        (L + "input_layernorm.weight", "layers.{i}.attn_norm.weight", None),
        (L + "post_attention_layernorm.weight", "layers.{i}.mlp_norm.weight", None),
        ("norm.weight", "final_norm.weight", None),
        ("lm_head.weight", "lm_head.weight", None),
    ],
    base_prefixes=("model.",),
    ignored=(r"rotary_emb\.inv_freq$", *head_key_patterns(TASK_CLASSES)),
)


def rope_settings(hf: dict[str, Any], source: str = "config.json") -> tuple[float, dict[str, Any] | None]:
    """(theta, scaling) from either the classic keys or transformers 5's `rope_parameters`."""
    params = hf.get("rope_parameters")
    if params:
        if not isinstance(params, dict):
            raise LightftError(f"{source}: rope_parameters must be an object, not {excerpt(params, 40)}")
        theta = number({"rope_theta": params.get("rope_theta", hf.get("rope_theta"))}, "rope_theta", 10000.0,
                       lo_open=True, source=source)
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
        return theta, check_scaling(scaling, source) if scaling.get("rope_type", "default") != "default" else None
    scaling = hf.get("rope_scaling")
    if scaling is not None and not isinstance(scaling, dict):
        raise LightftError(f"{source}: rope_scaling must be an object or null, not {excerpt(scaling, 40)}")
    return number(hf, "rope_theta", 10000.0, lo_open=True, source=source), check_scaling(scaling, source)


SCALING_NUMBERS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings", "beta_fast",
                   "beta_slow", "attention_factor")


def check_scaling(scaling: dict[str, Any] | None, source: str) -> dict[str, Any] | None:
    """The numbers of a rope scaling block must be finite and positive (they divide frequencies)."""
    for key in SCALING_NUMBERS:
        if scaling and scaling.get(key) is not None:
            number(scaling, key, 1.0, lo_open=True, source=f"{source}: rope scaling")
    return scaling


def read_config(hf: dict[str, Any], source: str = "config.json") -> ModelConfig:
    model_type = hf.get("model_type", "llama")
    if model_type in ("mistral", "qwen2") and hf.get("use_sliding_window") and hf.get("sliding_window"):
        raise LightftError(f"{source}: sliding-window attention is not supported; set use_sliding_window=false")
    hidden = dim(hf, "hidden_size", "width", source=source)
    heads = dim(hf, "num_attention_heads", "heads", source=source)
    kv_heads = dim(hf, "num_key_value_heads", "heads", heads, source)
    divides(("num_key_value_heads", kv_heads), ("num_attention_heads", heads), source)
    if hf.get("head_dim") is None:  # otherwise heads * head_dim may differ from the width (o_proj maps back)
        divides(("num_attention_heads", heads), ("hidden_size", hidden), source)
    head_dim = dim(hf, "head_dim", "width", hidden // heads, source)
    if head_dim % 2:
        raise LightftError(f"{source}: head_dim = {head_dim} must be even; rotary embeddings turn pairs of channels")
    theta, scaling = rope_settings(hf, source)
    attention_bias = bool(hf.get("attention_bias", False))
    return ModelConfig(
        family="llama",
        vocab_size=dim(hf, "vocab_size", "vocab", source=source),
        hidden_size=hidden,
        num_layers=dim(hf, "num_hidden_layers", "layers", source=source),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=dim(hf, "intermediate_size", "intermediate", source=source),
        causal=True,
        norm="rmsnorm",
        norm_eps=number(hf, "rms_norm_eps", 1e-6, lo_open=True, source=source),
        pre_norm=True,
        final_norm=True,
        position="rope",
        max_positions=dim(hf, "max_position_embeddings", "positions", 2048, source),
        mlp="gated",
        activation=activation_name(hf.get("hidden_act", "silu"), source),
        qkv_bias=attention_bias or model_type == "qwen2",  # Qwen2 biases q/k/v only
        out_bias=attention_bias,
        mlp_bias=bool(hf.get("mlp_bias", False)),
        rope_theta=theta,
        rope_scaling=scaling,
        lm_head=not drops_lm_head(hf, TASK_CLASSES),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        attention_dropout=dropout(hf, "attention_dropout", 0.0, source),
        pad_token_id=hf.get("pad_token_id"),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        hf_config=hf,
    )

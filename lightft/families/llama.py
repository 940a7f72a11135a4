"""Llama family (Llama 2/3, SmolLM, Mistral, Qwen2): RMSNorm, RoPE, SwiGLU, grouped-query attention."""

from __future__ import annotations

from typing import Any

from lightft.config import ModelConfig
from lightft.errors import LightftError
from lightft.families.common import TaskClass, activation_name, drops_lm_head, head_key_patterns, require
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


def rope_settings(hf: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """(theta, scaling) from either the classic keys or transformers 5's `rope_parameters`."""
    params = hf.get("rope_parameters")
    if params:
        theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
        return float(theta), scaling if scaling.get("rope_type", "default") != "default" else None
    scaling = hf.get("rope_scaling")
    return float(hf.get("rope_theta", 10000.0)), scaling


def read_config(hf: dict[str, Any]) -> ModelConfig:
    model_type = hf.get("model_type", "llama")
    if model_type in ("mistral", "qwen2") and hf.get("use_sliding_window") and hf.get("sliding_window"):
        raise LightftError("config.json: sliding-window attention is not supported; set use_sliding_window=false")
    hidden, heads = require(hf, "hidden_size"), require(hf, "num_attention_heads")
    theta, scaling = rope_settings(hf)
    attention_bias = bool(hf.get("attention_bias", False))
    return ModelConfig(
        family="llama",
        vocab_size=require(hf, "vocab_size"),
        hidden_size=hidden,
        num_layers=require(hf, "num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hidden // heads,
        intermediate_size=require(hf, "intermediate_size"),
        causal=True,
        norm="rmsnorm",
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        pre_norm=True,
        final_norm=True,
        position="rope",
        max_positions=hf.get("max_position_embeddings", 2048),
        mlp="gated",
        activation=activation_name(hf.get("hidden_act", "silu")),
        qkv_bias=attention_bias or model_type == "qwen2",  # Qwen2 biases q/k/v only
        out_bias=attention_bias,
        mlp_bias=bool(hf.get("mlp_bias", False)),
        rope_theta=theta,
        rope_scaling=scaling,
        lm_head=not drops_lm_head(hf, TASK_CLASSES),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        attention_dropout=float(hf.get("attention_dropout", 0.0)),
        pad_token_id=hf.get("pad_token_id"),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        hf_config=hf,
    )

"""GPT-2 family: pre-norm decoder, learned positions, fused Conv1D q/k/v, tied LM head."""

from __future__ import annotations

from typing import Any

from lightft.config import ModelConfig
from lightft.errors import LightftError
from lightft.families.common import TaskClass, activation_name, drops_lm_head, head_key_patterns, require
from lightft.keymap import KeyMap

MODEL_TYPES = ("gpt2",)
ARCHITECTURE = {"gpt2": "GPT2LMHeadModel"}

# Task heads in transformers' layout. The sequence classifier `score` has no bias and reads the last
# token that is not the pad token (lightft's `last` pooling); the classifiers have no LM head.
NO_LM_HEAD = {"backbone.lm_head.weight": None}
TASK_CLASSES = {
    "gpt2": {
        "classify": TaskClass("GPT2ForSequenceClassification", "transformer.", {"head.out.weight": "score.weight",
                              **NO_LM_HEAD}, pooling="last", labels=True, needs_pad_id=True),
        "ner": TaskClass("GPT2ForTokenClassification", "transformer.",
                         {"head.out.weight": "classifier.weight", "head.out.bias": "classifier.bias", **NO_LM_HEAD},
                         labels=True),
        "lm": TaskClass("GPT2LMHeadModel", "transformer."),
        "instruct": TaskClass("GPT2LMHeadModel", "transformer."),
    },
}

L = "h.{i}."
KEY_MAP = KeyMap(
    rows=[
        ("wte.weight", "embed_tokens.weight", None),
        ("wpe.weight", "embed_positions.weight", None),
        *[
            (L + src + "." + p, "layers.{i}." + dst + "." + p, "T" if p == "weight" and conv else None)
            for src, dst, conv in [
                ("ln_1", "attn_norm", False),
                ("attn.c_attn", "attn.qkv_proj", True),
                ("attn.c_proj", "attn.o_proj", True),
                ("ln_2", "mlp_norm", False),
                ("mlp.c_fc", "mlp.up_proj", True),
                ("mlp.c_proj", "mlp.down_proj", True),
            ]
            for p in ("weight", "bias")
        ],
        ("ln_f.weight", "final_norm.weight", None),
        ("ln_f.bias", "final_norm.bias", None),
        ("lm_head.weight", "lm_head.weight", None),
    ],
    base_prefixes=("transformer.",),
    # causal-mask buffers saved by old versions; task heads (a task export read as a backbone)
    ignored=(r"attn\.bias$", r"attn\.masked_bias$", *head_key_patterns(TASK_CLASSES)),
)


def read_config(hf: dict[str, Any]) -> ModelConfig:
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
        if hf.get(flag):
            raise LightftError(f"config.json: GPT-2 option {flag}=true is not supported; set it to false")
    if hf.get("scale_attn_weights") is False:
        raise LightftError("config.json: GPT-2 option scale_attn_weights=false is not supported")
    hidden = require(hf, "n_embd")
    return ModelConfig(
        family="gpt2",
        vocab_size=require(hf, "vocab_size"),
        hidden_size=hidden,
        num_layers=require(hf, "n_layer"),
        num_heads=require(hf, "n_head"),
        intermediate_size=hf.get("n_inner") or 4 * hidden,
        causal=True,
        norm="layernorm",
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        pre_norm=True,
        final_norm=True,
        position="learned",
        max_positions=hf.get("n_positions", 1024),
        mlp="plain",
        activation=activation_name(hf.get("activation_function", "gelu_new")),
        qkv_bias=True,
        out_bias=True,
        mlp_bias=True,
        fused_qkv=True,
        lm_head=not drops_lm_head(hf, TASK_CLASSES),
        tie_embeddings=hf.get("tie_word_embeddings", True),
        hidden_dropout=hf.get("resid_pdrop", 0.1),
        attention_dropout=hf.get("attn_pdrop", 0.1),
        pad_token_id=hf.get("pad_token_id"),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        hf_config=hf,
    )

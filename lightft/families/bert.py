"""BERT family (BERT, MiniLM, RoBERTa): post-norm encoder, learned positions, token types, pooler."""

from __future__ import annotations

from typing import Any

from lightft.config import ModelConfig
from lightft.errors import LightftError
from lightft.families.common import TaskClass, activation_name, head_key_patterns, require
from lightft.keymap import KeyMap

MODEL_TYPES = ("bert", "roberta")
ARCHITECTURE = {"bert": "BertModel", "roberta": "RobertaModel"}

# Task heads in transformers' layout. Its token-classification, QA and masked-LM classes are built
# without the pooler, so an export drops it; RoBERTa's sequence classifier is the pooler's dense + tanh
# on <s> followed by `out_proj`, i.e. exactly lightft's pooler pooling + linear head.
NO_POOLER = {"backbone.pooler.weight": None, "backbone.pooler.bias": None}
LABELS = {"head.out.weight": "classifier.weight", "head.out.bias": "classifier.bias"}
SPAN = {"head.qa_outputs.weight": "qa_outputs.weight", "head.qa_outputs.bias": "qa_outputs.bias"}
BERT_MLM = {"head.dense.weight": "cls.predictions.transform.dense.weight",
            "head.dense.bias": "cls.predictions.transform.dense.bias",
            "head.norm.weight": "cls.predictions.transform.LayerNorm.weight",
            "head.norm.bias": "cls.predictions.transform.LayerNorm.bias",
            "head.bias": "cls.predictions.bias"}
TASK_CLASSES = {
    "bert": {
        "classify": TaskClass("BertForSequenceClassification", "bert.", LABELS, pooling="pooler", labels=True),
        "ner": TaskClass("BertForTokenClassification", "bert.", {**LABELS, **NO_POOLER}, labels=True),
        "qa": TaskClass("BertForQuestionAnswering", "bert.", {**SPAN, **NO_POOLER}),
        "mlm": TaskClass("BertForMaskedLM", "bert.", {**BERT_MLM, **NO_POOLER}),
    },
    "roberta": {
        "classify": TaskClass("RobertaForSequenceClassification", "roberta.",
                              {"backbone.pooler.weight": "classifier.dense.weight",
                               "backbone.pooler.bias": "classifier.dense.bias",
                               "head.out.weight": "classifier.out_proj.weight",
                               "head.out.bias": "classifier.out_proj.bias"}, pooling="pooler", labels=True),
        "ner": TaskClass("RobertaForTokenClassification", "roberta.", {**LABELS, **NO_POOLER}, labels=True),
        "qa": TaskClass("RobertaForQuestionAnswering", "roberta.", {**SPAN, **NO_POOLER}),
    },
}

L = "encoder.layer.{i}."
KEY_MAP = KeyMap(
    rows=[
        ("embeddings.word_embeddings.weight", "embed_tokens.weight", None),
        ("embeddings.position_embeddings.weight", "embed_positions.weight", None),
        ("embeddings.token_type_embeddings.weight", "embed_types.weight", None),
        ("embeddings.LayerNorm.weight", "embed_norm.weight", None),
        ("embeddings.LayerNorm.bias", "embed_norm.bias", None),
        *[
            (L + src + "." + p, "layers.{i}." + dst + "." + p, None)
            for src, dst in [
                ("attention.self.query", "attn.q_proj"),
                ("attention.self.key", "attn.k_proj"),
                ("attention.self.value", "attn.v_proj"),
                ("attention.output.dense", "attn.o_proj"),
                ("attention.output.LayerNorm", "attn_norm"),
                ("intermediate.dense", "mlp.up_proj"),
                ("output.dense", "mlp.down_proj"),
                ("output.LayerNorm", "mlp_norm"),
            ]
            for p in ("weight", "bias")
        ],
        ("pooler.dense.weight", "pooler.weight", None),
        ("pooler.dense.bias", "pooler.bias", None),
        # BERT's masked-LM head (BertForMaskedLM / BertForPreTraining): not part of the model, read by
        # the mlm task through `checkpoint.read_extra_weights(dir, "mlm_head.")`; its decoder is the embedding
        ("cls.predictions.transform.dense.weight", "mlm_head.dense.weight", None),
        ("cls.predictions.transform.dense.bias", "mlm_head.dense.bias", None),
        ("cls.predictions.transform.LayerNorm.weight", "mlm_head.norm.weight", None),
        ("cls.predictions.transform.LayerNorm.bias", "mlm_head.norm.bias", None),
        ("cls.predictions.bias", "mlm_head.bias", None),
    ],
    base_prefixes=("bert.", "roberta."),
    # position_ids is a saved buffer; cls.* / lm_head.* are pre-training heads (cls.predictions: see above).
    ignored=(r"embeddings\.position_ids$", r"^cls\.", r"^lm_head\.", r"^classifier\.",
             *head_key_patterns(TASK_CLASSES)),
)


def read_config(hf: dict[str, Any]) -> ModelConfig:
    is_roberta = hf.get("model_type") == "roberta"
    pad = hf.get("pad_token_id", 1 if is_roberta else 0)
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise LightftError(
            f"config.json: position_embedding_type {hf['position_embedding_type']!r} is not supported; "
            "supported: 'absolute'"
        )
    hidden = require(hf, "hidden_size")
    return ModelConfig(
        family="bert",
        vocab_size=require(hf, "vocab_size"),
        hidden_size=hidden,
        num_layers=require(hf, "num_hidden_layers"),
        num_heads=require(hf, "num_attention_heads"),
        intermediate_size=hf.get("intermediate_size", 4 * hidden),
        causal=False,
        norm="layernorm",
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        pre_norm=False,
        embed_norm=True,
        final_norm=False,
        position="learned",
        max_positions=hf.get("max_position_embeddings", 512),
        position_offset=pad if is_roberta else 0,
        padding_positions=is_roberta,
        type_vocab_size=hf.get("type_vocab_size", 2),
        mlp="plain",
        activation=activation_name(hf.get("hidden_act", "gelu")),
        qkv_bias=True,
        out_bias=True,
        mlp_bias=True,
        pooler=True,
        lm_head=False,
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        pad_token_id=pad,
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        hf_config=hf,
    )

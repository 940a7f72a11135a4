"""Settings the recipe search tunes: --layer-lr-decay (per-depth AdamW groups) and --label-smoothing."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lightft.checkpoint import load_model
from lightft.lora.apply import apply_lora
from lightft.options import Options
from lightft.tasks.classify import ClassificationModule
from lightft.tasks.ner import NerModule
from lightft.tasks.optim import build_optimizer, layer_depth


def lr_of_each_parameter(module: torch.nn.Module, **opts) -> dict[str, float]:
    """Name -> the lr its AdamW group starts from (before the warm-up multiplier)."""
    o = Options(**opts)
    optimizer = build_optimizer(module, o, o.resolved_lr(), 100, head_names={"head"},
                                num_layers=module.backbone.cfg.num_layers)["optimizer"]
    by_id = {id(p): g["initial_lr"] for g in optimizer.param_groups for p in g["params"]}
    return {n: by_id[id(p)] for n, p in module.named_parameters() if p.requires_grad}


def test_layer_depth_reads_block_index_through_wrappers():
    assert layer_depth("backbone.embed_tokens.weight", 6) == 0
    assert layer_depth("backbone.embed_norm.weight", 6) == 0
    assert layer_depth("backbone.layers.0.attn.q_proj.weight", 6) == 1
    assert layer_depth("backbone._fsdp_wrapped_module.layers.5.mlp.up_proj.lora_B", 6) == 6
    assert layer_depth("backbone.final_norm.weight", 6) == 7
    assert layer_depth("backbone.pooler.weight", 6) == 7
    assert layer_depth("head.proj.weight", 6) == 7


@pytest.mark.parametrize("lora", [False, True])
def test_layer_lr_decay_scales_each_block_by_its_distance_from_the_head(hf_folder, lora):
    """Block i of L at lr * d^(L - i), embeddings at lr * d^(L + 1), pooler/final norm at lr, the head at
    --head-lr; LoRA factors take their block's lr. d = 1 keeps the old groups (one lr for the backbone)."""
    _, folder = hf_folder("bert", num_hidden_layers=3)
    backbone = load_model(folder)
    if lora:
        apply_lora(backbone, "attn", r=2)
    else:
        backbone.requires_grad_(True)
    module = ClassificationModule(backbone, Options(), label_names=["a", "b"])
    lr, d, L = 1e-3, 0.5, 3
    lrs = lr_of_each_parameter(module, lr=lr, head_lr=5e-3, layer_lr_decay=d, lora=lora)
    for name, value in lrs.items():
        if name.startswith("head."):
            want = 5e-3
        elif ".layers." in name:
            i = int(name.split(".layers.")[1].split(".")[0])
            want = lr * d ** (L - i)
        elif ".embed_" in name:
            want = lr * d ** (L + 1)
        else:
            want = lr
        assert value == pytest.approx(want), name
    assert any(".layers.0." in n for n in lrs) and any(".layers.2." in n for n in lrs)
    if not lora:
        assert any(".embed_tokens." in n for n in lrs)
    plain = lr_of_each_parameter(module, lr=lr, lora=lora)
    assert set(plain.values()) == {lr}


def test_label_smoothing_trains_on_smoothed_targets_and_validates_on_plain_ones(hf_folder):
    _, folder = hf_folder("bert")
    labels = torch.tensor([0, 2, 1, 2])
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    batch, out = {"labels": labels}, {"logits": logits}
    module = ClassificationModule(load_model(folder), Options(label_smoothing=0.2), label_names=["a", "b", "c"])
    module.train()
    assert module.loss(batch, out).item() == pytest.approx(
        F.cross_entropy(logits, labels, label_smoothing=0.2).item())
    assert module.loss(batch, out).item() > F.cross_entropy(logits, labels).item()
    module.eval()
    assert module.loss(batch, out).item() == pytest.approx(F.cross_entropy(logits, labels).item())

    ner = NerModule(load_model(folder), Options(label_smoothing=0.1), label_names=["O", "B-X", "I-X"]).train()
    tags = torch.tensor([[0, 1, -100], [2, 0, 0]])  # -100: padding / later sub-words, never smoothed into the loss
    token_logits = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(1))
    assert ner.loss({"labels": tags}, {"logits": token_logits}).item() == pytest.approx(
        F.cross_entropy(token_logits.flatten(0, 1), tags.flatten(), ignore_index=-100, label_smoothing=0.1).item())


def test_cli_takes_both_options_and_records_them(tmp_path):
    from lightft.cli.main import main
    from tests.tiny_run import make_tiny_model, write_classify_jsonl

    make_tiny_model(tmp_path / "m")
    write_classify_jsonl(tmp_path / "train.jsonl", 24)
    write_classify_jsonl(tmp_path / "val.jsonl", 8, seed=1)
    main(["train", "classify", "--model", str(tmp_path / "m"), "--train", str(tmp_path / "train.jsonl"),
          "--val", str(tmp_path / "val.jsonl"), "--out", str(tmp_path / "run"), "--full", "--max-steps", "2",
          "--batch-size", "4", "--layer-lr-decay", "0.8", "--label-smoothing", "0.1", "--no-progress",
          "--no-cache", "--threads", "1"])
    recorded = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))["options"]
    assert recorded["layer_lr_decay"] == 0.8 and recorded["label_smoothing"] == 0.1
    with pytest.raises(SystemExit):
        main(["train", "classify", "--model", str(tmp_path / "m"), "--train", str(tmp_path / "train.jsonl"),
              "--out", str(tmp_path / "run2"), "--layer-lr-decay", "1.5", "--no-progress", "--threads", "1"])


def test_group_window_sorts_within_windows_of_that_many_batches():
    """Every index once; each batch's lengths come from one window's sorted run, so a smaller window leaves
    more padding (the real lengths over the padded ones fall) and batches more mixed."""
    from lightft.data.sampler import length_grouped_order

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 60, (640,), generator=g).tolist()

    def real_share(order: list[int]) -> float:
        batches = [order[i : i + 8] for i in range(0, len(order), 8)]
        return sum(lengths[i] for i in order) / sum(max(lengths[i] for i in b) * len(b) for b in batches)

    shares = {}
    for window in (1, 4, 80):
        order = length_grouped_order(lengths, 8, seed=3, window_batches=window)
        assert sorted(order) == list(range(640))
        shares[window] = real_share(order)
    assert shares[1] < shares[4] < shares[80]
    assert length_grouped_order(lengths, 8, 3) == length_grouped_order(lengths, 8, 3, window_batches=50)

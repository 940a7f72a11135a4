"""The fast defaults: --precision / --dtype auto from the hardware (faked /proc/cpuinfo), recorded as concrete
values; fp32 masters for what trains; length grouping per task; limits applied before tokenising; validation
batches by length; the time split in metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lightft import precision
from lightft.options import Options
from lightft.runs.defaults import resolve_auto

AMX_CPU = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
AVX2_CPU = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma\n"
ARM_CPU = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"


@pytest.mark.parametrize("text,fast", [(AMX_CPU, True), (AVX2_CPU, False), (ARM_CPU, False),
                                       (AMX_CPU.replace(" amx_bf16", "").replace(" avx512_bf16", ""), False),
                                       (AVX2_CPU.replace("avx2", "avx2 avx512_bf16"), True)])
def test_auto_precision_follows_the_cpu_flags(tmp_path, text, fast):
    info = tmp_path / "cpuinfo"
    info.write_text(text, encoding="utf-8")
    flags = precision.cpu_flags(info)
    assert precision.cpu_has_fast_bf16(flags) is fast
    assert precision.resolve_precision("auto", "cpu", flags) == ("bf16-mixed" if fast else "32-true")
    assert precision.resolve_precision("32-true", "cpu", flags) == "32-true"  # an explicit value is kept


def test_auto_dtype_keeps_fp32_masters_for_what_trains():
    assert precision.resolve_dtype("auto", "bf16-mixed", base_trains=False) == "bfloat16"  # LoRA: frozen base
    assert precision.resolve_dtype("auto", "bf16-mixed", base_trains=True) == "float32"  # --full: fp32 masters
    assert precision.resolve_dtype("auto", "32-true", base_trains=False) == "float32"
    assert precision.resolve_dtype("float16", "32-true", base_trains=True) == "float16"


def test_training_base_weights_in_pure_bf16_is_warned_about(tmp_path, sentiment, capsys):
    """bf16-true casts the trained weights themselves to bf16 (small AdamW updates round away): allowed with
    --full, but said once on stderr; LoRA (frozen base) and bf16-mixed (fp32 masters) say nothing."""
    assert precision.pure_bf16_training_warning("bf16-true", base_trains=False) is None
    assert precision.pure_bf16_training_warning("bf16-mixed", base_trains=True) is None
    model, train_file, val_file = sentiment
    capsys.readouterr()
    train_quietly(tmp_path / "run", model=str(model), train=str(train_file), val=str(val_file), lora=False,
                  precision="bf16-true", max_steps=1, accelerator="cpu")
    err = capsys.readouterr().err
    assert err.count("warning: --precision bf16-true with trained base weights (--full) keeps them in bf16") == 1
    assert "--precision bf16-mixed keeps fp32 master weights" in err


@pytest.mark.parametrize("task,packing,grouped", [("classify", False, True), ("ner", False, True), ("qa", False, True),
                                                  ("instruct", False, True), ("instruct", True, False),
                                                  ("lm", False, False)])
def test_length_grouping_is_on_where_rows_are_padded(task, packing, grouped):
    assert resolve_auto(task, Options(packing=packing)).group_by_length is grouped
    assert resolve_auto(task, Options(packing=packing, group_by_length=False)).group_by_length is False


def test_a_resume_keeps_the_recorded_values_of_auto_options(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda *a: {"amx_bf16"})
    recorded = {"precision": "32-true", "dtype": "float32", "group_by_length": False}
    opts = resolve_auto("classify", Options(), recorded)
    assert (opts.precision, opts.dtype, opts.group_by_length) == ("32-true", "float32", False)
    fresh = resolve_auto("classify", Options())
    assert (fresh.precision, fresh.dtype, fresh.group_by_length) == ("bf16-mixed", "bfloat16", True)


def test_a_requeued_slurm_job_keeps_the_runs_auto_values_on_another_node(monkeypatch, tmp_path):
    """The requeued job runs its command line again (no --resume) and may land on a node of another kind:
    the run's recorded precision wins over what "auto" would pick there."""
    from lightft.train import run

    recorded = {"precision": "bf16-mixed", "dtype": "bfloat16", "group_by_length": True}
    monkeypatch.setattr(run, "is_run_dir", lambda path: True)
    monkeypatch.setattr(run, "read_run", lambda path: {"options": recorded, "slurm_job_id": "4242"})
    monkeypatch.setattr(precision, "cpu_flags", lambda *a: {"avx2"})  # this node: no fast bf16
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    opts = Options(out=str(tmp_path / "run"))
    assert run.continued_options(opts) == recorded
    assert resolve_auto("classify", opts, run.continued_options(opts)).precision == "bf16-mixed"
    monkeypatch.setenv("SLURM_JOB_ID", "999")  # another job writing over the run: not a continuation
    assert run.continued_options(opts) is None
    assert resolve_auto("classify", opts, run.continued_options(opts)).precision == "32-true"


def train_quietly(out: Path, **kw) -> dict:
    from lightft.train.run import train

    opts = Options(out=str(out), epochs=1, batch_size=4, max_length=16, threads=1, progress=False, log_every=1, **kw)
    return train("classify", opts)


@pytest.mark.parametrize("fast_cpu", [True, False])
def test_a_newcomer_without_precision_flags_gets_the_fast_path(tmp_path, monkeypatch, sentiment, fast_cpu):
    """No --precision / --dtype: bf16 autocast over a bf16 frozen base with fp32 LoRA factors and head on a
    fast-bf16 CPU, plain fp32 elsewhere; run.json records the concrete choice, and the run evaluates."""
    monkeypatch.setenv("LIGHTFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "cpu_flags", lambda *a: {"amx_bf16"} if fast_cpu else {"avx2"})
    model, train_file, val_file = sentiment
    out = tmp_path / "run"
    metrics = train_quietly(out, model=str(model), train=str(train_file), val=str(val_file), accelerator="cpu")
    recorded = json.loads((out / "run.json").read_text())["options"]
    want = ("bf16-mixed", "bfloat16") if fast_cpu else ("32-true", "float32")
    assert (recorded["precision"], recorded["dtype"], recorded["group_by_length"]) == (*want, True)
    weights = load_file(str(out / "weights.safetensors"))
    assert any("lora_A" in k for k in weights) and any(k.startswith("head.") for k in weights)
    assert all(v.dtype == torch.float32 for v in weights.values())  # fp32 masters of everything trained
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    split = metrics["time_split"]
    assert set(split) >= {"load", "data", "steps", "validation", "checkpoints", "other", "total"}
    assert all(v >= 0 for v in split.values()) and split["steps"] > 0
    assert sum(v for k, v in split.items() if k != "total") == pytest.approx(split["total"], abs=0.05)
    assert json.loads((out / "metrics.json").read_text())["time_split"] == split

    from lightft.runs import load_run  # the run is rebuilt in the dtypes it trained with
    run = load_run(str(out))
    assert run.backbone.embed_tokens.weight.dtype == (torch.bfloat16 if fast_cpu else torch.float32)
    assert all(p.dtype == torch.float32 for n, p in run.backbone.named_parameters() if "lora_" in n)

    # a merged export adds ΔW to the checkpoint's own fp32 values, never to the bf16 copy the run trained over
    from lightft.checkpoint import load_model
    from lightft.cli.export import export_run

    export_run(str(out), str(tmp_path / "merged"), adapter=False, dtype=None, force=False, say=lambda line: None)
    base, merged = load_model(str(model)).state_dict(), load_model(str(tmp_path / "merged")).state_dict()
    assert all(t.dtype == torch.float32 for t in merged.values())
    untouched = [k for k in base if not any(t in k for t in ("q_proj", "k_proj", "v_proj", "o_proj"))]
    assert "embed_tokens.weight" in untouched and all(torch.equal(merged[k], base[k]) for k in untouched)
    assert any(not torch.equal(merged[k], base[k]) for k in base if "q_proj.weight" in k)  # ΔW is in there


def test_limits_stop_tokenising_when_the_split_is_its_own_file(tmp_path, monkeypatch, sentiment):
    from lightft.data.classify import ClassificationDataModule
    from lightft.tokenizer import load_tokenizer

    monkeypatch.setenv("LIGHTFT_CACHE", str(tmp_path / "cache"))
    model, train_file, val_file = sentiment
    tok = load_tokenizer(str(model))
    opts = Options(limit_train=5, limit_val=3, max_length=16)
    dm = ClassificationDataModule(tok, opts, train_file=str(train_file), val_file=str(val_file))
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.datasets["train"]), len(dm.datasets["val"])) == (5, 3)
    assert dm.stats["train"]["records"] == 5 and dm.stats["train"]["stopped_at_limit"] == 5  # 32 in the file
    assert dm.stats["val"]["records"] == 3
    full = ClassificationDataModule(tok, Options(max_length=16), train_file=str(train_file), val_file=str(val_file))
    full.setup("fit")
    assert dm.datasets["train"] == full.datasets["train"][:5]  # the same first examples as cutting afterwards

    # no --val: the held-out split is drawn from every example, so --limit-train does not change it
    held = ClassificationDataModule(tok, Options(limit_train=5, max_length=16), train_file=str(train_file))
    held.setup("fit")
    unlimited = ClassificationDataModule(tok, Options(max_length=16), train_file=str(train_file))
    unlimited.setup("fit")
    assert held.datasets["val"] == unlimited.datasets["val"]
    assert held.datasets["train"] == unlimited.datasets["train"][:5]
    assert "stopped_at_limit" not in held.stats["train"]


def test_validation_batches_run_longest_first_and_predictions_keep_the_file_order(tmp_path, monkeypatch, sentiment):
    from lightft.data.classify import ClassificationDataModule
    from lightft.tokenizer import load_tokenizer

    monkeypatch.setenv("LIGHTFT_CACHE", str(tmp_path / "cache"))
    model, train_file, val_file = sentiment
    dm = ClassificationDataModule(load_tokenizer(str(model)), Options(batch_size=2, max_length=16),
                                  train_file=str(train_file), val_file=str(val_file))
    dm.setup("fit")
    widths = [b["attention_mask"].sum(1).tolist() for b in dm.val_dataloader()]
    flat = [w for batch in widths for w in batch]
    assert flat == sorted(flat, reverse=True)
    dm.datasets["eval"] = dm.datasets["val"]
    lines = [line for b in dm.predict_dataloader() for line in b["line"].tolist()]
    assert lines == sorted(lines)


def test_bf16_mixed_clips_gradients_with_the_fused_adamw():
    """Lightning's own bf16-mixed plugin refuses to clip with a fused AdamW (an fp16 loss-scaler concern)."""
    from lightft.train.mixed import BF16Mixed

    w = torch.nn.Parameter(torch.ones(4, 4))
    w.grad = torch.full((4, 4), 3.0)
    opt = torch.optim.AdamW([w], fused=True)
    BF16Mixed("cpu").clip_gradients(opt, clip_val=1.0)
    assert float(w.grad.norm()) == pytest.approx(1.0, rel=1e-4)

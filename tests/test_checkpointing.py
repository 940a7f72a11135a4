"""Checkpoint safety and the pieces of exact resume, tested directly: atomic writes, weights-only loads,
trainable-only contents, NaN stops, the resumable rank-split sampler, the strategy settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lightft.cli.main import main
from lightft.data.sampler import ResumableSampler, random_order
from lightft.errors import LightftError
from lightft.options import Options
from lightft.train.checkpointing import atomic_torch_save, load_checkpoint_file
from lightft.train.distributed import build_strategy
from tests.tiny_run import make_tiny_model, needs_lora, write_classify_jsonl


class Evil:
    def __reduce__(self):  # what a malicious pickle does on load
        return (os.system, ("echo pwned > pwned.txt",))


def test_pickled_objects_are_refused_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": {"w": torch.ones(2)}, "x": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(LightftError, match="refusing to load"):
        load_checkpoint_file(tmp_path / "evil.ckpt")
    assert not (tmp_path / "pwned.txt").exists()


def test_damaged_checkpoint_is_a_one_line_error(tmp_path):
    atomic_torch_save({"w": torch.ones(3)}, tmp_path / "a.ckpt")
    blob = (tmp_path / "a.ckpt").read_bytes()
    (tmp_path / "a.ckpt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(LightftError, match="damaged checkpoint"):
        load_checkpoint_file(tmp_path / "a.ckpt")


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": torch.tensor(1)}, path)

    def dies_halfway(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(LightftError, match=r"last.ckpt: cannot write \(disk full\); nothing was replaced"):
        atomic_torch_save({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert int(load_checkpoint_file(path)["step"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_sampler_ranks_together_see_the_global_batches_and_resume_skips_consumed():
    n, b = 22, 3
    one = list(ResumableSampler(n, lambda s: random_order(n, s), seed=7))
    ranks = [list(ResumableSampler(n, lambda s: random_order(n, s), seed=7, num_replicas=2, rank=r)) for r in (0, 1)]
    padded = one + one[: 24 - n]
    for k in range(len(ranks[0]) // b):  # k-th batch of each rank = k-th global batch of size 2b
        together = ranks[0][k * b:(k + 1) * b] + ranks[1][k * b:(k + 1) * b]
        assert sorted(together) == sorted(padded[2 * k * b:2 * (k + 1) * b])
    s = ResumableSampler(n, lambda s: random_order(n, s), seed=7)
    s.set_epoch(3)
    full = list(s)
    s.consumed = 9
    state = s.state_dict()
    t = ResumableSampler(n, lambda s: random_order(n, s), seed=7)
    t.load_state_dict(state)
    t.set_epoch(3)
    assert list(t) == full[9:]
    assert list(t) == full  # only the first iteration after a resume skips
    t.load_state_dict(state)
    t.set_epoch(4)  # the saved epoch was finished: nothing to skip in the next one
    assert len(list(t)) == n
    with pytest.raises(LightftError, match="num_replicas"):
        ResumableSampler(n, lambda s: random_order(n, s), seed=7, num_replicas=2, rank=0).load_state_dict(state)


def test_strategy_settings():
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

    from lightft.model import Block

    full = build_strategy(Options(strategy="ddp", lora=False))
    lora = build_strategy(Options(strategy="ddp", lora=True))
    assert isinstance(full, DDPStrategy) and full._ddp_kwargs["find_unused_parameters"] is True
    assert lora._ddp_kwargs["find_unused_parameters"] is False  # every LoRA factor and the head get gradients
    fsdp = build_strategy(Options(strategy="fsdp"))
    policy = fsdp.kwargs["auto_wrap_policy"]  # torch's ModuleWrapPolicy: one FSDP unit per Block
    assert isinstance(fsdp, FSDPStrategy) and policy._module_classes == {Block}
    assert fsdp.kwargs["use_orig_params"] is True  # frozen and trainable tensors may share a unit (LoRA)
    assert build_strategy(Options(strategy="auto")) == "auto"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    make_tiny_model(d / "bert")
    write_classify_jsonl(d / "train.jsonl", 24)
    write_classify_jsonl(d / "val.jsonl", 8, seed=1)
    return d


def train(tiny: Path, out: Path, monkeypatch, *extra: str) -> None:
    monkeypatch.setenv("LIGHTFT_CACHE", str(tiny / "cache"))
    main(["train", "classify", "--model", str(tiny / "bert"), "--train", str(tiny / "train.jsonl"), "--val",
          str(tiny / "val.jsonl"), "--out", str(out), "--batch-size", "8", "--epochs", "1", "--no-progress",
          "--checkpoint-every", "1", *extra])


@pytest.mark.parametrize("mode", [("--full", "--freeze", "backbone"), pytest.param(("--lora",), marks=needs_lora)],
                         ids=["head-only", "lora"])
def test_partial_checkpoint_holds_trainable_tensors_and_their_optimiser_state(tiny, tmp_path, monkeypatch, mode):
    train(tiny, tmp_path / "run", monkeypatch, *mode)
    ckpt = load_checkpoint_file(tmp_path / "run" / "checkpoints" / "last.ckpt")  # weights_only=True
    assert ckpt["state_dict"] and all(k.startswith("head.") or ".lora_" in k for k in ckpt["state_dict"])
    assert not any(k.endswith("q_proj.weight") for k in ckpt["state_dict"])  # frozen base weights stay out
    n_trainable = len(ckpt["state_dict"])
    (opt_state,) = ckpt["optimizer_states"]
    assert sum(len(g["params"]) for g in opt_state["param_groups"]) == n_trainable
    assert len(opt_state["state"]) == n_trainable
    assert {"RngState", "DataPosition"} <= set(ckpt["callbacks"])
    assert ckpt["callbacks"]["DataPosition"]["consumed"] == 24


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tiny, tmp_path, monkeypatch, capsys):
    out = tmp_path / "nan"
    with pytest.raises(SystemExit) as e:
        train(tiny, out, monkeypatch, "--full", "--lr", "1e30", "--warmup", "0", "--epochs", "3")
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err[-1].startswith("error: training stopped: loss became nan") and "last good checkpoint" in err[-1]
    last = load_checkpoint_file(out / "checkpoints" / "last.ckpt")
    assert all(v.isfinite().all() for v in last["state_dict"].values())
    assert not (out / "weights.safetensors").exists() and not (out / "metrics.json").exists()


def test_non_finite_weights_are_never_checkpointed(tiny):
    from lightft.checkpoint import load_model
    from lightft.tasks.classify import ClassificationModule

    module = ClassificationModule(load_model(tiny / "bert"), Options(lora=False), label_names=["neg", "pos"])
    state = {k: v.clone() for k, v in module.state_dict().items()}
    state["head.out.bias"][0] = float("inf")
    with pytest.raises(FloatingPointError, match="head.out.bias"):
        module.on_save_checkpoint({"state_dict": state})


def test_chat_template_cannot_reach_python_internals(tmp_path):
    import json

    from lightft.tokenizer import load_tokenizer

    make_tiny_model(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "tokenizer_config.json").read_text())
    cfg["chat_template"] = ("{{ ''.__class__.__mro__[1].__subclasses__() }}"
                            "{{ cycler.__init__.__globals__.os.system('echo pwned') }}")
    (tmp_path / "m" / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = load_tokenizer(tmp_path / "m")
    with pytest.raises(LightftError, match="chat template refused"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])

"""--ema: the average is the bias-corrected exponential average of the weights after each optimiser step;
validation scores it without changing the training trajectory; best.ckpt and weights.safetensors hold it,
last.ckpt the training weights (resume: tests/test_resume.py runs the SIGKILL-and-resume check with --ema)."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from lightft.errors import LightftError
from lightft.train.ema import WeightEMA
from tests.tiny_run import make_tiny_model, run_in_process, write_classify_jsonl


class Regression(L.LightningModule):
    """A linear model with a frozen part; records the weights after every step and those validation sees."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(4, 1)
        self.frozen = nn.Linear(4, 4).requires_grad_(False)
        self.after_step: list[torch.Tensor] = []
        self.validated: list[tuple[int, torch.Tensor]] = []

    def flat(self) -> torch.Tensor:
        return torch.cat([self.net.weight.detach().flatten(), self.net.bias.detach()]).clone()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return ((self.net(self.frozen(x)) - y) ** 2).mean()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.after_step.append(self.flat())

    def validation_step(self, batch, batch_idx):
        if batch_idx == 0:
            self.validated.append((self.global_step, self.flat()))

    def configure_optimizers(self):
        return torch.optim.SGD(self.net.parameters(), lr=0.1, momentum=0.5)


def loader(n: int = 24, seed: int = 1) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return torch.utils.data.DataLoader(list(zip(x, x.sum(1, keepdim=True))), batch_size=4)


def fit(callbacks: list[L.Callback], epochs: int = 3) -> Regression:
    module = Regression()
    trainer = L.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, loader(), loader(8, seed=2))
    return module


def expected_average(steps: list[torch.Tensor], decay: float) -> torch.Tensor:
    """sum_i decay^(t - i) w_i / sum_i decay^(t - i): the weights after steps 1..t, recent ones weighted more."""
    t = len(steps)
    weights = torch.tensor([decay ** (t - i) for i in range(1, t + 1)], dtype=torch.float64)
    return (torch.stack(steps).double() * weights[:, None]).sum(0) / weights.sum()


def test_average_is_the_bias_corrected_exponential_average_and_training_is_unchanged():
    decay = 0.8
    plain = fit([])
    averaged = fit([WeightEMA(decay)])
    # the trajectory (weights after each step) does not depend on --ema, though validation ran the average
    assert len(averaged.after_step) == len(plain.after_step) == 18
    for a, b in zip(averaged.after_step, plain.after_step):
        assert torch.equal(a, b)
    # each validation (end of epoch: steps 6, 12, 18) saw the average of the steps so far
    assert [s for s, _ in averaged.validated] == [6, 12, 18]
    for step, seen in averaged.validated:
        torch.testing.assert_close(seen.double(), expected_average(plain.after_step[:step], decay), rtol=0, atol=1e-6)
        assert not torch.allclose(seen, plain.after_step[step - 1])  # not the raw weights
    # after training the module holds the average; the frozen part is untouched
    torch.testing.assert_close(averaged.flat().double(), expected_average(plain.after_step, decay), rtol=0, atol=1e-6)
    assert torch.equal(averaged.frozen.weight, plain.frozen.weight)


def test_decay_out_of_range_is_refused():
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(LightftError, match="--ema must be between 0 and 1"):
            WeightEMA(bad)


def test_a_run_exports_the_average_and_keeps_training_weights_for_resume(tmp_path, monkeypatch):
    make_tiny_model(tmp_path / "m")
    write_classify_jsonl(tmp_path / "train.jsonl", 32)
    write_classify_jsonl(tmp_path / "val.jsonl", 8, seed=1)
    out = tmp_path / "run"
    run_in_process(["train", "classify", "--model", str(tmp_path / "m"), "--train", str(tmp_path / "train.jsonl"),
                    "--val", str(tmp_path / "val.jsonl"), "--out", str(out), "--full", "--epochs", "1",
                    "--batch-size", "4", "--lr", "1e-3", "--ema", "0.9", "--no-progress", "--threads", "1"],
                   tmp_path / "cache", monkeypatch)
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["options"]["ema"] == 0.9
    exported = load_file(str(out / "weights.safetensors"))
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    best = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)
    state = last["callbacks"]["WeightEMA"]
    assert state["updates"] == last["global_step"] == best["global_step"] == 8 and state["decay"] == 0.9
    assert exported.keys() == state["average"].keys() == last["state_dict"].keys()
    differ = 0
    for k, v in exported.items():
        torch.testing.assert_close(v, state["average"][k].to(v.dtype), rtol=0, atol=0)  # the export is the average
        differ += not torch.equal(v, last["state_dict"][k])  # last.ckpt: the training weights
    assert differ > len(exported) // 2
    for k, v in exported.items():  # best.ckpt (one validation, at the end): the average it scored
        assert torch.equal(best["state_dict"][k], v), k


def test_fsdp_is_refused_naming_the_flags():
    class Trainer:  # what setup reads of a Lightning Trainer running FSDP
        strategy = type("FSDPStrategy", (), {})()

    with pytest.raises(LightftError, match="--ema does not work with --strategy fsdp"):
        WeightEMA(0.9).setup(Trainer(), Regression(), "fit")


def test_fsdp_is_refused_before_anything_is_written(tmp_path, capsys):
    from lightft.cli.main import main

    model = make_tiny_model(tmp_path / "m")
    data = write_classify_jsonl(tmp_path / "train.jsonl", 20)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["train", "classify", "--model", str(model), "--train", str(data), "--out", str(tmp_path / "run"),
              "--full", "--ema", "0.9", "--strategy", "fsdp", "--max-steps", "1", "--no-progress"])
    assert exc.value.code == 2 and capsys.readouterr().err.strip() == (
        "error: --ema does not work with --strategy fsdp (each rank holds shards of the weights); "
        "use --strategy ddp or drop --ema")
    assert not (tmp_path / "run").exists()

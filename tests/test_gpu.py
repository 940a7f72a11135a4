"""GPU checks (`pytest -m gpu`, run by benchmarks/gpu_check.sh): skipped where there is no CUDA device.

The same model on the GPU as on the CPU (fp32 logits equal, bf16 close); --precision auto picks bf16
on a bf16 GPU; a tiny LoRA run trains on the GPU with the defaults and gives the CPU's validation loss
in fp32."""

from __future__ import annotations

import json

import pytest
import torch

from lightft.options import Options
from lightft.precision import resolve_precision

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_auto_precision_is_bf16_on_a_bf16_gpu():
    want = "bf16-mixed" if torch.cuda.is_bf16_supported(including_emulation=False) else "32-true"
    assert resolve_precision("auto", "auto") == want
    assert resolve_precision("auto", "gpu") == want


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_forward_on_the_gpu_matches_the_cpu(hf_folder, family):
    from lightft.checkpoint import load_model

    _, path = hf_folder(family)
    ids = torch.randint(3, 99, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    cpu = load_model(path)(ids, attention_mask=mask).hidden_states
    gpu = load_model(path).cuda()(ids.cuda(), attention_mask=mask.cuda()).hidden_states.cpu()
    torch.testing.assert_close(gpu[mask.bool()], cpu[mask.bool()], atol=2e-4, rtol=2e-4)
    bf16 = load_model(path, dtype="bfloat16").cuda()(ids.cuda(), attention_mask=mask.cuda()).hidden_states
    torch.testing.assert_close(bf16.float().cpu()[mask.bool()], cpu[mask.bool()], atol=0.1, rtol=0.05)


def test_a_lora_run_on_the_gpu_gives_the_cpu_loss(tmp_path, monkeypatch):
    from supervised_utils import SENTIMENT, tiny_bert_dir, write_lines

    from lightft.train.run import train

    monkeypatch.setenv("LIGHTFT_CACHE", str(tmp_path / "cache"))
    model = tiny_bert_dir(tmp_path / "bert")
    rows = [{"text": t, "label": lab} for t, lab in SENTIMENT * 4]
    data = dict(model=str(model), train=str(write_lines(tmp_path / "t.jsonl", rows)),
                val=str(write_lines(tmp_path / "v.jsonl", rows[:8])), epochs=2, batch_size=4, max_length=16,
                lora_dropout=0.0, classifier_dropout=0.0, progress=False)
    cpu = train("classify", Options(out=str(tmp_path / "cpu"), accelerator="cpu", precision="32-true", **data))
    gpu = train("classify", Options(out=str(tmp_path / "gpu"), accelerator="gpu", precision="32-true", **data))
    assert gpu["val_loss"] == pytest.approx(cpu["val_loss"], abs=1e-3)
    auto = train("classify", Options(out=str(tmp_path / "auto"), accelerator="gpu", **data))  # the defaults
    recorded = json.loads((tmp_path / "auto" / "run.json").read_text())["options"]
    assert recorded["precision"] == resolve_precision("auto", "gpu")
    assert auto["val_loss"] == pytest.approx(cpu["val_loss"], abs=0.05)
    assert auto["cuda_peak_bytes"] > 0

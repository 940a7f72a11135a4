"""`--kernels auto` vs `off`: the same training step and the same greedy tokens, per family.

A LoRA step (all linear layers, both LoRA factors non-zero so every gradient is) on bert, gpt2 and a
grouped-query llama, through the real task modules, on a right-padded batch and, for decoders, on a
packed batch (documents restarting positions inside a row). Gradient errors are measured on the worst
tensor as max |a - b| / max |b|. Tolerances (and what was measured on the tiny models here):
  fp32: loss rtol 1e-5, gradients 1e-4 apart (the kernels only reorder sums: hand-written backward
        passes, chunked LM-head loss; measured <= 1.2e-6);
  bf16: loss rtol 1e-3 (measured <= 4e-5); gradients 5e-2 apart (measured <= 2.8e-2), which is the
        size of bf16 rounding itself: off's own gradients are 2.6-3.2e-2 from the fp32 ones. So the
        test also bounds auto's distance from fp32 by 1.5x off's + 5e-3 (measured ratio <= 1.3):
        the bf16 CPU kernels are no less accurate than autograd on the reference math.
Greedy generation (fp32) gives the same tokens with kernels on (prompt-lookup drafting, fewer
passes) and off (the plain loop, one pass per token).
"""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from lightft import LightftError, load_model
from lightft.cli.main import cli
from lightft.generate import SamplingOptions, generate_ids
from lightft.kernels import enabled, use_kernels
from lightft.lora import lora_parameters
from lightft.options import Options
from lightft.tasks.causal_lm import InstructModule
from lightft.tasks.classify import ClassificationModule
from lightft.runs.backbone import prepare_backbone
from tiny_decoder import tiny_decoder

FAMILIES = {"bert": {}, "gpt2": {}, "llama": {"num_key_value_heads": 2}}
TOL = {"float32": (1e-5, 1e-4), "bfloat16": (1e-3, 5e-2)}  # (loss rtol, gradient relative error)


def padded_batch(family: str) -> dict[str, torch.Tensor]:
    """Three right-padded rows (12, 9 and 5 real tokens); decoders learn every token after the third."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 90, (3, 12), generator=g)
    mask = (torch.arange(12)[None, :] < torch.tensor([12, 9, 5])[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0)
    if family == "bert":
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
                "labels": torch.tensor([0, 2, 1])}
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :3] = -100  # a prompt: no loss there
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def packed_batch() -> dict[str, torch.Tensor]:
    """Two rows of packed documents: positions restart and attention stays inside each document."""
    ids = torch.randint(3, 90, (2, 12), generator=torch.Generator().manual_seed(2))
    segments = torch.tensor([[1] * 5 + [2] * 7, [1] * 3 + [2] * 4 + [3] * 5])
    positions = torch.stack([torch.cat([torch.arange((row == s).sum()) for s in row.unique()]) for row in segments])
    return {"input_ids": ids, "labels": ids.clone(), "position_ids": positions, "segment_ids": segments}


def lora_step(path, family: str, kernels: str, dtype: str, batch: dict) -> tuple[torch.Tensor, dict]:
    """Loss and trainable gradients of one LoRA step through the task module, as `lightft train` builds it."""
    backbone = load_model(path, dtype=dtype)
    opts = Options(lora_targets="all-linear", lora_dropout=0.0, classifier_dropout=0.0, kernels=kernels)
    torch.manual_seed(0)
    prepare_backbone(backbone, opts)
    assert enabled(backbone) == (kernels == "auto")
    with torch.no_grad():  # B starts at zero (so A's gradient would be): give both factors values
        for p in lora_parameters(backbone):
            p.normal_(std=0.1)
    if family == "bert":
        module = ClassificationModule(backbone, opts, label_names=["a", "b", "c"])
    else:
        module = InstructModule(backbone, opts)
    module.to(getattr(torch, dtype)).train()  # bf16: the head too, as Lightning's bf16-true does
    loss = module.loss(batch, module(batch))
    loss.backward()
    grads = {n: p.grad.float() for n, p in module.named_parameters() if p.requires_grad}
    return loss.detach().float(), grads


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_lora_step_same_loss_and_gradients_with_kernels_on_and_off(hf_folder, family, dtype):
    _, path = hf_folder(family, **FAMILIES[family])
    loss_rtol, grad_tol = TOL[dtype]
    batches = [padded_batch(family)] + ([packed_batch()] if family != "bert" else [])
    for batch in batches:
        loss_on, grads_on = lora_step(path, family, "auto", dtype, batch)
        loss_off, grads_off = lora_step(path, family, "off", dtype, batch)
        torch.testing.assert_close(loss_on, loss_off, rtol=loss_rtol, atol=0)
        assert grads_on.keys() == grads_off.keys() and any("lora_A" in n for n in grads_on)
        assert all(g.abs().max() > 0 for g in grads_off.values())  # every gradient is compared, none vacuously
        worst = max((relative_error(grads_on[n], grads_off[n]), n) for n in grads_off)
        assert worst[0] < grad_tol, f"{family} {dtype} {sorted(batch)}: gradient {worst[1]} differs by {worst[0]:.2e}"
        if dtype == "bfloat16":  # against the fp32 step: the kernels lose no more to rounding than the reference
            _, exact = lora_step(path, family, "off", "float32", batch)
            err_on = max(relative_error(grads_on[n], exact[n]) for n in exact)
            err_off = max(relative_error(grads_off[n], exact[n]) for n in exact)
            assert err_on <= 1.5 * err_off + 5e-3, f"{family} {sorted(batch)}: {err_on:.2e} vs {err_off:.2e} from fp32"


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_greedy_generation_same_tokens_with_kernels_on_and_off(hf_folder, family):
    _, path = hf_folder(family, **FAMILIES[family])
    on = use_kernels(load_model(path), "auto", inference=True)
    off = use_kernels(load_model(path), "off", inference=True)
    passes = {"on": 0, "off": 0}
    on.register_forward_hook(lambda *args: passes.__setitem__("on", passes["on"] + 1))
    off.register_forward_hook(lambda *args: passes.__setitem__("off", passes["off"] + 1))
    prompts = [[5, 6, 7, 8, 5, 6, 7, 8, 5, 6], [11, 12, 11, 12, 11], [33, 90, 12, 4, 71, 55, 9, 14]]
    opts = SamplingOptions(max_new_tokens=16)
    for prompt in prompts:  # one at a time: kernels on draft by prompt lookup
        assert (generate_ids(on, [prompt], opts, eos=set())[0].token_ids
                == generate_ids(off, [prompt], opts, eos=set())[0].token_ids)
    assert passes["off"] == len(prompts) * 16  # the plain loop: a prefill, then one pass per further token
    assert passes["on"] < passes["off"]  # drafts were accepted
    batched = [generate_ids(m, prompts, opts, eos=set()) for m in (on, off)]  # left-padded batch
    assert [g.token_ids for g in batched[0]] == [g.token_ids for g in batched[1]]


def test_generate_cli_kernels_off_gives_the_same_text_and_a_bad_mode_is_refused(tmp_path):
    model = tiny_decoder(tmp_path, "llama")
    texts = []
    for kernels in ("auto", "off"):
        result = CliRunner().invoke(cli, ["generate", "--model", str(model), "--prompt", "abcabcabc", "--no-chat",
                                          "--max-new-tokens", "12", "--kernels", kernels, "--jsonl"])
        assert result.exit_code == 0, result.output
        texts.append(json.loads(result.stdout)["text"])
    assert texts[0] == texts[1]
    result = CliRunner().invoke(cli, ["generate", "--model", str(model), "--prompt", "a", "--kernels", "on"])
    assert result.exit_code == 2 and "'on' is not one of 'auto', 'off'" in result.output
    with pytest.raises(LightftError, match="--kernels 'fast' is not one of auto, off"):
        use_kernels(load_model(model), "fast")


def test_switching_back_off_restores_the_reference_math(hf_folder):
    _, path = hf_folder("llama")
    model = load_model(path)
    reference = dict(vars(model.ops))
    use_kernels(model, "auto")
    assert vars(model.ops) != reference and all(layer.attn.ops is model.ops for layer in model.layers)
    use_kernels(model, "off")
    assert vars(model.ops) == reference

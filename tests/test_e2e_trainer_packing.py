"""benchmarks/e2e_trainer.py's packed instruct side: the padding-free batches it hands the Trainer (one flattened
row, positions restarting at each example) score every example as if it were alone, so the instruct recipe's
comparison in benchmarks/end_to_end.py gives the Trainer true packing, not attention across examples (fast)."""

from __future__ import annotations

import pytest
import torch


class _Tok:  # what model_and_collator reads of a tokenizer
    pad_token, eos_token, pad_token_id = "</s>", "</s>", 2


def test_flattened_batch_scores_each_example_alone(trainer_script, tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "tiny")
    spec = {"task": "instruct", "model": str(tmp_path / "tiny"), "packing": True, "lora": False}
    model, collator = trainer_script.model_and_collator(spec, _Tok(), [], torch.float32)
    assert isinstance(collator, transformers.DataCollatorWithFlattening)
    assert model.config.use_cache is False  # with a KV cache transformers ignores the packed positions
    model.eval()
    examples = [{"input_ids": [1, 5, 9, 14, 3, 7], "labels": [-100, -100, -100, 14, 3, 7]},
                {"input_ids": [1, 8, 8, 40, 41, 42, 43, 2], "labels": [-100, -100, -100, -100, 41, 42, 43, 2]},
                {"input_ids": [1, 11, 60, 61], "labels": [-100, -100, 60, 61]}]
    batch = collator(examples)
    assert batch["input_ids"].shape == (1, 18)  # [1, total tokens]: one row, no padding
    with torch.no_grad():
        packed = model(**batch).logits[0]  # (18, vocab)
        alone = [model(input_ids=torch.tensor([e["input_ids"]])).logits[0] for e in examples]
    torch.testing.assert_close(packed, torch.cat(alone), atol=1e-5, rtol=1e-5)  # no attention across examples

    def summed_nll(logits: torch.Tensor, labels: list[int]) -> tuple[float, int]:
        target = torch.tensor(labels[1:])  # the token after each position
        nll = torch.nn.functional.cross_entropy(logits[:-1], target, ignore_index=-100, reduction="sum")
        return float(nll), int((target != -100).sum())

    parts = [summed_nll(lg, e["labels"]) for lg, e in zip(alone, examples)]
    with torch.no_grad():
        loss = float(model(**batch).loss)  # the Trainer's loss: mean over the response tokens of the whole row
    assert loss == pytest.approx(sum(s for s, _ in parts) / sum(n for _, n in parts), rel=1e-5)

"""Real weights: MiniLM (HF folder) and SmolLM2-135M-Instruct (GGUF, converted) against `transformers`."""

from __future__ import annotations

import pytest
import torch

from conftest import minilm_dir, smollm_gguf
from lightft import load_model, load_tokenizer

SENTENCES = ["The cat sat on the mat.", "Fine-tuning small language models on a laptop is feasible.",
             "Paris is the capital of France, and Berlin is the capital of Germany!"]


@pytest.mark.slow
def test_minilm_matches_transformers():
    transformers = pytest.importorskip("transformers")
    path = minilm_dir()
    tok, ours = load_tokenizer(path), load_model(path)
    ref_tok = transformers.AutoTokenizer.from_pretrained(path)
    ref = transformers.BertModel.from_pretrained(path, dtype=torch.float32).eval()
    rows = [tok.encode(s) for s in SENTENCES]
    assert rows == [ref_tok(s)["input_ids"] for s in SENTENCES]
    width = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.no_grad():
        got = ours(ids, attention_mask=mask).hidden_states
        expected = ref(input_ids=ids, attention_mask=mask).last_hidden_state
    keep = mask.bool()  # padded positions are undefined in both
    torch.testing.assert_close(got[keep], expected[keep], rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def smollm(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    from lightft.cli.convert import convert_gguf

    gguf_file = smollm_gguf()
    out = convert_gguf(gguf_file, tmp_path_factory.mktemp("smollm") / "model")
    ref = transformers.AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name,
                                                            dtype=torch.float32).eval()
    ref_tok = transformers.AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    return load_model(out), load_tokenizer(out), ref, ref_tok


def _greedy(forward, ids: torch.Tensor, steps: int) -> list[int]:
    """Plain greedy decoding without a cache (the full sequence each step)."""
    out = []
    for _ in range(steps):
        nxt = forward(ids)[:, -1].argmax(-1)
        out.append(int(nxt))
        ids = torch.cat([ids, nxt[:, None]], dim=1)
    return out


@pytest.mark.slow
def test_smollm2_gguf_conversion_matches_transformers(smollm):
    ours, tok, ref, ref_tok = smollm
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    ids = torch.tensor([tok.encode(prompt)])
    assert ids[0].tolist() == ref_tok(prompt)["input_ids"]
    steps = 10
    with torch.no_grad():
        ref_tokens = _greedy(lambda x: ref(x).logits, ids, steps)
        # One teacher-forced pass over prompt + transformers' continuation gives our logits at every
        # step: our greedy choice at each position equals transformers' token there, which by
        # induction means our own greedy loop would produce the same 10 tokens.
        full = torch.cat([ids, torch.tensor([ref_tokens])], dim=1)
        got, expected = ours(full).logits, ref(full).logits
    # Same dequantised weights bit for bit, so only fp32 summation order differs (30 layers, logits up
    # to ~40): observed max |diff| ~1e-4; 1e-3 absolute is ~2.5e-5 of the logit range.
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)
    ours_tokens = got[0, ids.shape[1] - 1 : -1].argmax(-1).tolist()
    assert ours_tokens == ref_tokens
    assert "Paris" in tok.decode(ours_tokens)

"""Generation: greedy continuations equal transformers' `generate`; KV cache == no cache; batched == one by one."""

from __future__ import annotations

import pytest
import torch

from lightft import LightftError, load_model
from lightft.generate import SamplingOptions, cut_at_stop, eos_ids, generate_ids, next_token

PROMPTS = [[5, 17, 42, 8, 23], [61, 7], [33, 90, 12, 4, 71, 55, 9, 14]]
FAMILIES = {"gpt2": {}, "llama": {"num_key_value_heads": 2, "tie_word_embeddings": False}}


def _hf_greedy(hf_model, prompt: list[int], n: int) -> list[int]:
    out = hf_model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                            max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_greedy_matches_transformers(hf_folder, family):
    hf_model, path = hf_folder(family, **FAMILIES[family])
    ours = load_model(path)
    opts = SamplingOptions(max_new_tokens=12)
    for prompt in PROMPTS:
        got = generate_ids(ours, [prompt], opts, eos=set())[0]
        assert got.token_ids == _hf_greedy(hf_model, prompt, 12)
        assert got.finish_reason == "length"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_cache_batch_and_single_agree(hf_folder, family):
    _, path = hf_folder(family, **FAMILIES[family])
    model = load_model(path)
    opts = SamplingOptions(max_new_tokens=10)
    single = [generate_ids(model, [p], opts, eos=set())[0].token_ids for p in PROMPTS]
    batched = [g.token_ids for g in generate_ids(model, PROMPTS, opts, eos=set())]  # left padding
    no_cache = [g.token_ids for g in generate_ids(model, PROMPTS, SamplingOptions(max_new_tokens=10, use_cache=False),
                                                   eos=set())]
    assert batched == single
    assert no_cache == single


def test_stops_at_eos_and_stop_string(hf_folder):
    _, path = hf_folder("llama")
    model = load_model(path)
    free = generate_ids(model, [PROMPTS[0]], SamplingOptions(max_new_tokens=8), eos=set())[0].token_ids
    eos_tok = free[3]
    first = free.index(eos_tok)
    got = generate_ids(model, [PROMPTS[0]], SamplingOptions(max_new_tokens=8), eos={eos_tok})[0]
    assert got.finish_reason == "eos" and got.token_ids == free[:first]
    decode = lambda ids: " ".join(map(str, ids))  # noqa: E731
    stop = SamplingOptions(max_new_tokens=8, stop=(str(free[1]),))
    got = generate_ids(model, [PROMPTS[0]], stop, eos=set(), decode=decode)[0]
    assert got.finish_reason == "stop" and len(got.token_ids) <= 2
    assert cut_at_stop("Paris\nQ: next", ("\n",)) == "Paris"


def test_sampling_is_seeded_and_respects_top_k():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    opts = SamplingOptions(temperature=1.0, top_k=3, seed=1)
    a = next_token(logits, opts, torch.Generator().manual_seed(1))
    b = next_token(logits, opts, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    top3 = torch.topk(logits, 3).indices
    for _ in range(20):
        t = next_token(logits, opts, None)
        assert all(t[i] in top3[i] for i in range(4))
    nucleus = next_token(logits, SamplingOptions(temperature=1.0, top_p=1e-6), None)
    assert torch.equal(nucleus, logits.argmax(-1))  # the smallest nucleus is the top token


def test_eos_list_from_config(hf_folder):
    _, path = hf_folder("llama", eos_token_id=[2, 7])
    assert eos_ids(load_model(path)) == {2, 7}


def test_bad_generation_inputs(hf_folder):
    _, path = hf_folder("gpt2")
    model = load_model(path)
    with pytest.raises(LightftError, match="positions"):
        generate_ids(model, [PROMPTS[0]], SamplingOptions(max_new_tokens=100), eos=set())
    with pytest.raises(LightftError, match="empty prompt"):
        generate_ids(model, [[]], SamplingOptions(), eos=set())
    with pytest.raises(LightftError, match="top-p"):
        generate_ids(model, [[1]], SamplingOptions(top_p=0.0), eos=set())
    with pytest.raises(LightftError, match="--lookahead"):
        generate_ids(model, [[1]], SamplingOptions(lookahead=-1), eos=set())


@pytest.fixture(scope="module")
def smollm2_folder(tmp_path_factory):
    """SmolLM2-135M-Instruct converted by `lightft convert gguf`; transformers reads the same folder as the oracle."""
    from conftest import smollm_gguf

    from lightft.cli.convert import convert_gguf

    transformers = pytest.importorskip("transformers")
    out = tmp_path_factory.mktemp("smollm2") / "model"
    convert_gguf(smollm_gguf(), out)
    return transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval(), out


@pytest.mark.slow
def test_smollm2_greedy_matches_transformers(smollm2_folder):
    from lightft import load_tokenizer
    from lightft.generate import SamplingOptions, generate_text

    hf, path = smollm2_folder
    model, tok = load_model(path), load_tokenizer(path)
    prompts = ["The capital of France is", "def fibonacci(n):", "Q: What is the capital of Japan?\nA:"]
    ours = generate_text(model, tok, prompts, SamplingOptions(max_new_tokens=20), template=None, batch_size=3)
    for prompt, gen in zip(prompts, ours):
        ids = torch.tensor([tok.encode(prompt)])
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=20, do_sample=False,
                          pad_token_id=tok.pad_id)
        expected = [t for t in out[0, ids.shape[1]:].tolist()]
        if gen.finish_reason == "eos":
            expected = expected[: len(gen.token_ids)]
        assert gen.token_ids == expected, prompt

"""Prompt-lookup drafting (lightft/kernels/lookup.py): the same tokens as the plain greedy loop, in fewer passes."""

from __future__ import annotations

import pytest

from test_generate import FAMILIES, PROMPTS
from lightft import load_model
from lightft.generate import SamplingOptions, generate_ids
from lightft.kernels import use_kernels
from lightft.kernels.lookup import draft_by_lookup


def test_draft_by_lookup_takes_the_latest_longest_match():
    seq = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 5, 2, 3]
    assert draft_by_lookup(seq, 2) == [7, 8]  # "2 3" last seen before position 7
    assert draft_by_lookup([4, 5, 6], 3) == []  # nothing repeats
    assert draft_by_lookup([4, 5, 4], 3) == [5, 4]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_prompt_lookup_decoding_equals_plain_greedy(hf_folder, family):
    """Same tokens as one-at-a-time greedy decoding, in fewer forward passes (drafts were accepted)."""
    _, path = hf_folder(family, **FAMILIES[family])
    model = use_kernels(load_model(path))
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    prompts = [[5, 6, 7, 8, 5, 6, 7, 8, 5, 6], [11, 12, 11, 12, 11], PROMPTS[2]]
    passes = tokens = 0
    for prompt in prompts:
        for limit in (1, 7, 30):
            plain = generate_ids(model, [prompt], SamplingOptions(max_new_tokens=limit, lookahead=0), eos=set())[0]
            calls.clear()
            fast = generate_ids(model, [prompt], SamplingOptions(max_new_tokens=limit, lookahead=4), eos=set())[0]
            assert fast.token_ids == plain.token_ids and fast.finish_reason == plain.finish_reason == "length"
            passes, tokens = passes + len(calls), tokens + limit
    assert passes < tokens  # prefill included: drafting saved passes


def test_prompt_lookup_decoding_stops_on_eos_and_stop_strings(hf_folder):
    _, path = hf_folder("llama")
    model = use_kernels(load_model(path))
    prompt = [5, 6, 7, 8, 5, 6, 7, 8, 5, 6]
    free = generate_ids(model, [prompt], SamplingOptions(max_new_tokens=20, lookahead=0), eos=set())[0].token_ids
    for eos_tok in set(free[2:10]):
        plain = generate_ids(model, [prompt], SamplingOptions(max_new_tokens=20, lookahead=0), eos={eos_tok})[0]
        fast = generate_ids(model, [prompt], SamplingOptions(max_new_tokens=20), eos={eos_tok})[0]
        assert (fast.token_ids, fast.finish_reason) == (plain.token_ids, plain.finish_reason)
    decode = lambda ids: " ".join(map(str, ids))  # noqa: E731
    stop = (f"{free[4]} {free[5]}",)
    plain = generate_ids(model, [prompt], SamplingOptions(max_new_tokens=20, lookahead=0, stop=stop), set(), decode=decode)[0]
    fast = generate_ids(model, [prompt], SamplingOptions(max_new_tokens=20, stop=stop), set(), decode=decode)[0]
    assert (fast.token_ids, fast.finish_reason) == (plain.token_ids, plain.finish_reason)

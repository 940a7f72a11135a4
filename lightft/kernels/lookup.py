"""Prompt-lookup decoding: greedy decoding of one prompt that checks drafted tokens in the same forward pass.

Speeds up: batch-1 greedy decoding, which is bound by reading every weight once per forward pass.
Equals: the plain greedy loop of lightft/generate.py, token for token (up to float rounding, as with
any change of batch shape; tests/test_kernel_lookup.py). `generate_ids` takes this path when kernels
are on, one prompt is decoded greedily with a KV cache and `SamplingOptions.lookahead` > 0.
"""

from __future__ import annotations

from typing import Callable

import torch

from lightft.model import KVCache, Transformer


def draft_by_lookup(seq: list[int], k: int, max_ngram: int = 3) -> list[int]:
    """Up to k tokens that followed the latest earlier occurrence of seq's last n tokens (n = max_ngram..1)."""
    for n in range(min(max_ngram, len(seq) - 1), 0, -1):
        tail = seq[-n:]
        for start in range(len(seq) - n - 1, -1, -1):
            if seq[start : start + n] == tail:
                return seq[start + n : start + n + k]
    return []


def lookup_decode(model: Transformer, prompt: list[int], first: int, cache: KVCache, k: int,
                  accept: Callable[[int, int], None], done: list[bool]) -> None:
    """Greedy decoding of one row that checks drafted tokens in the same forward pass (prompt lookup).

    Decoding is bound by reading the weights once per forward pass, and a pass over 1 + k positions
    reads them once too. So each pass feeds the last chosen token plus up to k tokens guessed by
    `draft_by_lookup` (text often repeats names and phrases of the prompt or of itself), and keeps the
    guesses the model itself would have chosen: greedy picks at every position come out of the same
    pass, so the output is what one-token-at-a-time greedy decoding gives (up to float rounding, as
    with any change of batch shape). Rejected positions are dropped from the KV cache by rewinding it.
    """
    seq = list(prompt)
    token = first  # chosen, not yet in the cache
    while True:
        accept(0, token)
        if done[0]:
            return
        seq.append(token)
        draft = draft_by_lookup(seq, min(k, cache.max_len - cache.length - 1))
        ids = torch.tensor([[token, *draft]], device=cache.keys[0].device)  # (1, 1 + len(draft))
        start = cache.length
        hidden = model(ids, cache=cache, return_logits=False).hidden_states  # (1, 1 + d, H)
        picks = model.lm_head(hidden[0]).argmax(-1).tolist()  # greedy choice after each position
        taken = 0  # drafted tokens that match what the model picks
        while taken < len(draft) and draft[taken] == picks[taken]:
            taken += 1
        for t in draft[:taken]:
            accept(0, t)
            if done[0]:
                return
            seq.append(t)
        cache.length = start + 1 + taken  # keep the fed token and the accepted drafts only
        token = picks[taken]

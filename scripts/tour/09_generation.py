"""Lesson 9: generation: one prefill pass, then one token at a time with a growing KV cache; greedy vs top-p.

    python scripts/tour/09_generation.py

A decoder predicts the next token from everything before it. Recomputing the whole sequence for
every new token repeats work: the keys and values of earlier positions never change. The KV cache
keeps them: one pass over the prompt fills it (prefill), then each step feeds only the newest token
and attends to the cache. Then how the next token is chosen: greedy (the most likely) or top-p
sampling (from the smallest set of tokens whose probabilities add up to p).
Source: lightft/model.py (KVCache, Attention.forward), lightft/generate.py (generate_ids, next_token).
"""

# %% Setup: a tiny random Llama (its text is noise; the mechanics are what matter) and a prompt
import torch

import tourkit
from lightft.generate import SamplingOptions, generate_ids, next_token
from lightft.model import KVCache

torch.set_grad_enabled(False)
model = tourkit.tiny_model("llama", std=0.3)
cfg = model.cfg
prompt, new_tokens = [5, 17, 42, 8, 23], 6

# %% 1. Prefill: one pass over the prompt stores every layer's keys and values
cache = KVCache(cfg, batch=1, max_len=len(prompt) + new_tokens, device=torch.device("cpu"), dtype=torch.float32)
out = model(torch.tensor([prompt]), cache=cache)
print(f"prefill: {len(prompt)} tokens in one pass; cache length {cache.length}; layer 0 keys in use: "
      f"{tuple(cache.keys[0][:, :, :cache.length].shape)}  (batch, kv heads, positions, head dim)")
tourkit.show("layer 0, kv head 0: cached keys (one row per prompt position)", cache.keys[0][0, 0, : cache.length])
token = int(out.logits[0, -1].argmax())

# %% 2. Decode: feed the newest token only; the cache grows by one position per step
tourkit.title("greedy decoding with the cache (and a check against recomputing everything)")
sequence, rows, work_cached, work_full = list(prompt), [], len(prompt), len(prompt)
for step in range(new_tokens):
    sequence.append(token)
    fed = token
    out = model(torch.tensor([[fed]]), cache=cache)  # (1, 1) in, attends to cache.length positions
    full = model(torch.tensor([sequence]))  # the same question without a cache: the whole sequence again
    torch.testing.assert_close(out.logits[0, -1], full.logits[0, -1], rtol=1e-5, atol=1e-5)
    work_cached, work_full = work_cached + 1, work_full + len(sequence)
    token = int(out.logits[0, -1].argmax())
    rows.append((step, fed, cache.length, tuple(cache.keys[0][:, :, : cache.length].shape), token))
tourkit.table(rows, ("step", "token fed", "cache length", "layer-0 keys in use", "greedy next"))
print(f"positions run through the model: {work_cached} with the cache, {work_full} without")
greedy = sequence[len(prompt):]

# %% 3. lightft's generate_ids runs the same loop (with kernels off; prompt-lookup drafting is a kernel)
plain = generate_ids(model, [prompt], SamplingOptions(max_new_tokens=new_tokens), eos=set())[0]
no_cache = generate_ids(model, [prompt], SamplingOptions(max_new_tokens=new_tokens, use_cache=False), eos=set())[0]
print(f"\nby hand {greedy}\ngenerate_ids {plain.token_ids}   without cache {no_cache.token_ids}")
assert plain.token_ids == no_cache.token_ids == greedy

# %% 4. Choosing the next token: greedy takes the top one; top-p samples from the nucleus
logits = model(torch.tensor([prompt])).logits[0, -1]  # (vocab,)
temperature, top_p = 1.0, 0.5
probs = (logits / temperature).softmax(-1)
sorted_probs, order = probs.sort(descending=True)
before = sorted_probs.cumsum(0) - sorted_probs  # probability mass of the tokens ranked above
in_nucleus = before < top_p  # add tokens, most likely first, until their total reaches p
nucleus = order[in_nucleus]
tourkit.title(f"the most likely next tokens (temperature {temperature}, top-p {top_p})")
tourkit.table([(int(t), f"{float(p):.4f}", f"{float(b + p):.4f}", "yes" if k else "")
               for t, p, b, k in list(zip(order, sorted_probs, before, in_nucleus))[:10]],
              ("token", "probability", "cumulative", "in nucleus"))
print(f"greedy picks {int(logits.argmax())}; top-p samples among {nucleus.tolist()}")
kept = torch.zeros_like(probs).scatter(0, nucleus, probs[nucleus])
kept /= kept.sum()  # renormalised over the nucleus
options = SamplingOptions(temperature=temperature, top_p=top_p)
draws = []
for seed in range(300):  # by hand and lightft draw from the same generator: the same tokens
    ours = int(torch.multinomial(kept, 1, generator=torch.Generator().manual_seed(seed)))
    theirs = int(next_token(logits[None], options, torch.Generator().manual_seed(seed)))
    assert ours == theirs, seed
    draws.append(theirs)
assert set(draws) <= set(nucleus.tolist())  # nothing outside the nucleus is ever drawn
counts = torch.bincount(torch.tensor(draws), minlength=cfg.vocab_size)[nucleus]
print("300 draws:", {int(t): int(c) for t, c in zip(nucleus, counts)},
      " expected:", {int(t): round(300 * float(kept[t])) for t in nucleus})
assert int(next_token(logits[None], SamplingOptions(), None)) == int(logits.argmax())  # temperature 0 = greedy
print("\nLesson 9 done: the cache turns each new token into one position of work; sampling only changes the pick.")

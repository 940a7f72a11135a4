"""benchmarks/e2e_trainer.py's QA side: the Trainer's windows label the right tokens and its post-processing
scores like lightft's, so the QA comparison in benchmarks/end_to_end.py compares models, not scorers (fast)."""

from __future__ import annotations

import pytest
import torch

from conftest import minilm_dir

CONTEXT = ("The river town grew around a stone bridge built in 1420. Its market sold wool, salt and iron. "
           "Later a railway station opened beside the bridge, and the town's mill closed in 1961.")
ROWS = [
    {"id": "q1", "question": "When was the bridge built?", "context": CONTEXT, "answers": ["1420", "in 1420"],
     "answer_starts": [CONTEXT.index("1420"), CONTEXT.index("in 1420")]},
    {"id": "q2", "question": "What closed in 1961?", "context": CONTEXT, "answers": ["the town's mill"],
     "answer_starts": [CONTEXT.index("the town's mill")]},
]


@pytest.fixture(scope="module")
def tok():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(minilm_dir()))


def spec(max_length: int, stride: int) -> dict:
    return {"max_length": max_length, "doc_stride": stride}


def test_windows_label_the_answer_tokens_or_cls(trainer_script, tok):
    features, info = trainer_script.qa_features(spec(40, 8), tok, ROWS)
    assert len(features) > len(ROWS)  # the context overflows 40 tokens: several windows per question
    seen = {0: 0, 1: 0}
    for f, i in zip(features, info):
        assert len(f["input_ids"]) <= 40
        row = ROWS[i["row"]]
        s, e = f["start_positions"], f["end_positions"]
        if (s, e) == (0, 0):
            continue  # this window does not hold the whole answer
        seen[i["row"]] += 1
        assert row["context"][i["offsets"][s][0]:i["offsets"][e][1]] == row["answers"][0]
    assert seen[0] >= 1 and seen[1] >= 1  # every answer is labelled in some window
    assert all(o is None for o in info[0]["offsets"][:3])  # [CLS] and the question's tokens map to no context


def test_post_processing_picks_the_best_span_over_windows(trainer_script, tok):
    features, info = trainer_script.qa_features(spec(40, 8), tok, ROWS)
    width = max(len(f["input_ids"]) for f in features)
    start, end = torch.full((len(features), width), -100.0), torch.full((len(features), width), -100.0)
    for k, f in enumerate(features):
        start[k, :len(f["input_ids"])] = end[k, :len(f["input_ids"])] = 0.0
        if f["start_positions"]:  # gold windows: a clear peak at the gold span
            start[k, f["start_positions"]] = end[k, f["end_positions"]] = 5.0
    assert trainer_script.qa_scores(start.numpy(), end.numpy(), info, ROWS) == {"exact_match": 100.0, "f1": 100.0}
    # a higher-scoring span in a window without the answer wins over the gold one, as in lightft's best_answers
    k = next(k for k, f in enumerate(features) if f["start_positions"] == 0 and info[k]["row"] == 1)
    ctx = [t for t, o in enumerate(info[k]["offsets"]) if o is not None]
    start[k, ctx[0]] = end[k, ctx[1]] = 9.0
    scores = trainer_script.qa_scores(start.numpy(), end.numpy(), info, ROWS)
    assert scores["exact_match"] == 50.0 and scores["f1"] < 100.0


def test_spans_longer_than_the_limit_are_not_answers(trainer_script, tok):
    features, info = trainer_script.qa_features(spec(128, 32), tok, ROWS[:1])
    assert len(features) == 1
    ctx = [t for t, o in enumerate(info[0]["offsets"]) if o is not None]
    start, end = torch.zeros(1, len(features[0]["input_ids"])), torch.zeros(1, len(features[0]["input_ids"]))
    start[0, ctx[0]], end[0, ctx[0] + trainer_script.MAX_ANSWER_TOKENS] = 9.0, 9.0  # one token too long
    start[0, ctx[2]], end[0, ctx[3]] = 1.0, 1.0
    from lightft.tasks.qa_metrics import f1_score

    kept = ROWS[0]["context"][info[0]["offsets"][ctx[2]][0]:info[0]["offsets"][ctx[3]][1]]  # the lower, valid span
    assert trainer_script.qa_scores(start.numpy(), end.numpy(), info, ROWS[:1])["f1"] == \
        pytest.approx(100.0 * f1_score(kept, ROWS[0]["answers"]))

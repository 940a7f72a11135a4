"""QA metrics and post-processing on hand-made cases: SQuAD EM / F1, BioASQ factoid measures, n-best spans."""

from __future__ import annotations

import json

import pytest
import torch

from lightft.options import Options
from lightft.question_ids import question_groups
from lightft.tasks.qa import best_answers, rank_per_question, score_windows, window_candidates
from lightft.tasks.qa_metrics import exact_match, f1_score, factoid_metrics, normalize_answer, squad_metrics


def test_normalisation_follows_squad():
    assert normalize_answer("  The  Cat, sat!  ") == "cat sat"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("theory") == "theory"  # articles only as whole words


def test_exact_match_and_f1_take_the_best_gold():
    assert exact_match("the Eiffel tower", ["Eiffel Tower.", "tower"]) == 1.0
    assert exact_match("Eiffel", ["Eiffel Tower"]) == 0.0
    assert f1_score("the big cat", ["a cat sat"]) == pytest.approx(0.5)  # {big, cat} vs {cat, sat}
    assert f1_score("big cat", ["dog", "big cat sat"]) == pytest.approx(0.8)  # P 1, R 2/3
    assert f1_score("", ["x"]) == 0.0 and f1_score("a", ["the"]) == 0.0  # both normalise to nothing


def test_squad_metrics_match_torchmetrics():
    tm = pytest.importorskip("torchmetrics.text")
    preds = {"1": "Denver Broncos", "2": "the big cat", "3": "1998", "4": "nothing"}
    golds = {"1": ["Denver Broncos", "Broncos"], "2": ["a cat sat", "cat"], "3": ["in 1998"], "4": ["something else"]}
    ours = squad_metrics(preds, golds)
    oracle = tm.SQuAD()(
        [{"prediction_text": p, "id": i} for i, p in preds.items()],
        [{"answers": {"text": g, "answer_start": [0] * len(g)}, "id": i} for i, g in golds.items()])
    assert ours["exact_match"] == pytest.approx(float(oracle["exact_match"]), abs=1e-4)
    assert ours["f1"] == pytest.approx(float(oracle["f1"]), abs=1e-4)


def test_factoid_strict_lenient_mrr():
    ranked = {"q1": ["IL-6", "TNF"], "q2": ["x", "y", "Tumor necrosis factor"], "q3": ["a", "b", "c", "d", "e", "f"],
              "q4": []}
    golds = {"q1": ["il-6"], "q2": ["tumor necrosis factor", "TNF"], "q3": ["f"], "q4": ["z"]}
    m = factoid_metrics(ranked, golds, k=5)
    assert m["strict_acc"] == pytest.approx(1 / 4)
    assert m["lenient_acc"] == pytest.approx(2 / 4)  # "f" is 6th: outside the top 5
    assert m["mrr"] == pytest.approx((1 + 1 / 3) / 4)


def window(context, spans, start, end, eid="e", w=0, n=1, answers=("gold",)):
    """A stored window: token char spans + start/end logits over its context tokens."""
    return {"example_id": eid, "window": w, "n_windows": n, "context": context,
            "char_starts": [s for s, _ in spans], "char_ends": [e for _, e in spans],
            "start_logits": torch.tensor(start, dtype=torch.float), "end_logits": torch.tensor(end, dtype=torch.float),
            "answers": json.dumps(list(answers))}


CTX = "alpha beta gamma delta"
SPANS = [(0, 5), (6, 10), (11, 16), (17, 22)]


def test_span_search_respects_order_and_max_length():
    # best start at token 3, best end at token 1: invalid (end < start) -> next best valid pair
    w = window(CTX, SPANS, [0, 1, 0, 5], [0, 5, 0, 0])
    best = best_answers([w], n_best=4, max_answer_length=30, top_k=3)
    assert best[0]["answer"] == "beta" and best[0]["score"] == pytest.approx(6.0)
    assert abs(sum(b["probability"] for b in best) - 1) < 0.2
    # a long span scores best but is over the length limit
    w = window(CTX, SPANS, [9, 0, 0, 0], [0, 0, 0, 9])
    assert best_answers([w], 4, max_answer_length=4, top_k=1)[0]["answer"] == "alpha beta gamma delta"
    assert best_answers([w], 4, max_answer_length=2, top_k=1)[0]["answer"] != "alpha beta gamma delta"
    starts, ends = [s for s, _ in SPANS], [e for _, e in SPANS]
    spans = [(starts.index(cs), ends.index(ce)) for _, cs, ce in window_candidates(w, 4, 2)]
    assert spans and all(0 <= e - s < 2 for s, e in spans)


def test_best_span_chosen_across_windows():
    # two windows over one context; the second holds the higher-scoring span
    w0 = window(CTX, SPANS[:3], [3, 0, 0], [3, 0, 0], w=0, n=2)
    w1 = window(CTX, SPANS[2:], [0, 4], [0, 4], w=1, n=2)
    best = best_answers([w0, w1], 20, 30, 5)
    assert best[0]["answer"] == "delta" and best[1]["answer"] == "alpha"
    assert len({b["answer"] for b in best}) == len(best)  # distinct texts


def test_score_windows_over_windows_stored_in_any_order():
    opts = Options()
    w0 = window(CTX, SPANS[:3], [3, 0, 0], [3, 0, 0], eid="a", w=0, n=2, answers=["delta"])
    w1 = window(CTX, SPANS[2:], [0, 4], [0, 4], eid="a", w=1, n=2, answers=["delta"])
    other = window(CTX, SPANS, [0, 5, 0, 0], [0, 0, 5, 0], eid="b", answers=["beta gamma", "gamma"])
    m = score_windows([w1, other, w0], opts)
    assert m == {"exact_match": 100.0, "f1": 100.0}


def test_question_groups_detect_bioasq_ids():
    assert question_groups(["5a_001", "5a_002", "6b_001"], "auto") == {"5a_001": "5a", "5a_002": "5a", "6b_001": "6b"}
    assert question_groups(["5733be28", "5733be29"], "auto") is None
    assert question_groups(["a_1", "b_2"], "auto") is None  # every id its own question: plain SQuAD
    assert question_groups(["a_1", "b_2"], "yes") == {"a_1": "a", "b_2": "b"}
    assert question_groups(["5a_001", "5a_002"], "no") is None


def test_snippets_merge_per_question():
    answers = {"q_1": [{"answer": "IL-6", "probability": 0.5}, {"answer": "TNF", "probability": 0.4}],
               "q_2": [{"answer": "tnf", "probability": 0.9}, {"answer": "p53", "probability": 0.05}]}
    ranked = rank_per_question(answers, {"q_1": "q", "q_2": "q"}, k=5)
    assert ranked == {"q": ["tnf", "IL-6", "p53"]}
    opts = Options()
    wins = [window(CTX, SPANS, [0, 6, 0, 0], [0, 6, 0, 0], eid="q_1", answers=["beta"]),
            window(CTX, SPANS, [5, 0, 0, 0], [5, 0, 0, 0], eid="q_2", answers=["Beta"])]
    m = score_windows(wins, opts)
    assert m["exact_match"] == 50.0 and m["strict_acc"] == 1.0 and m["questions"] == 1.0

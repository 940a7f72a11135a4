"""Extractive-QA metrics: SQuAD exact match / F1 and BioASQ factoid strict / lenient accuracy and MRR.

Pure functions over strings, no tensors, so they are easy to check on hand-made cases. Semantics
follow the official SQuAD v1.1 evaluation script (our own code): answers are normalised by
lowercasing, removing punctuation, removing the articles a/an/the and collapsing whitespace; a
prediction scores the maximum over all gold answers. EM and F1 are reported in percent (0-100) as
SQuAD does. The BioASQ factoid measures (Tsatsaronis et al. 2015) rank up to five candidate answers
per question; a candidate is correct when it matches any gold answer after the same normalisation
(BioASQ matches case-insensitively). They are fractions (0-1), as BioASQ reports them.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable, Sequence

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation, drop articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: Iterable[str]) -> float:
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def _f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golds: Iterable[str]) -> float:
    return max((_f1(prediction, g) for g in golds), default=0.0)


def squad_metrics(predictions: dict[str, str], golds: dict[str, Sequence[str]]) -> dict[str, float]:
    """{"exact_match", "f1"} in percent over the ids that have gold answers (and a prediction or not)."""
    ids = [i for i, g in golds.items() if g]
    if not ids:
        return {}
    em = sum(exact_match(predictions.get(i, ""), golds[i]) for i in ids)
    f1 = sum(f1_score(predictions.get(i, ""), golds[i]) for i in ids)
    return {"exact_match": 100.0 * em / len(ids), "f1": 100.0 * f1 / len(ids)}


def factoid_metrics(ranked: dict[str, Sequence[str]], golds: dict[str, Sequence[str]], k: int = 5) -> dict[str, float]:
    """BioASQ factoid measures over questions: strict accuracy (top-1), lenient accuracy (top-k), MRR (top-k)."""
    ids = [q for q, g in golds.items() if g]
    if not ids:
        return {}
    strict = lenient = rr = 0.0
    for q in ids:
        gold = {normalize_answer(g) for g in golds[q]}
        ranks = [r for r, cand in enumerate(ranked.get(q, [])[:k], start=1) if normalize_answer(cand) in gold]
        if ranks:
            strict += ranks[0] == 1
            lenient += 1
            rr += 1.0 / ranks[0]
    n = len(ids)
    return {"strict_acc": strict / n, "lenient_acc": lenient / n, "mrr": rr / n, "questions": float(n)}

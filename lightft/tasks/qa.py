"""Extractive QA: span head (start / end logits), loss, and post-processing of windows into answers.

Post-processing works on whole questions, not batches: the windows of one question may land in
different batches, so `update_metrics` only stores each window's context-token logits, and the
epoch end (`metrics_for`) groups them by question id, searches the n-best (start, end) pairs of
every window with end >= start and at most `--max-answer-length` tokens, and keeps the best span
over all windows. Under several processes the stored windows are gathered first, so every rank
scores every question once. For BioASQ-style ids (`<question>_<nnn>`, one snippet each) the
snippets' candidates are also merged per question into a ranked top-k list for the factoid
measures. `predict` emits a question's record as soon as its last window has been seen.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightft.question_ids import question_groups
from lightft.tasks.heads import matching
from lightft.tasks.qa_metrics import factoid_metrics, normalize_answer, squad_metrics
from lightft.tasks.module import TaskModule

Window = dict[str, Any]  # one window's logits over its context tokens + what maps them back to text


class SpanHead(nn.Module):
    """(B, T, H) -> start and end logits (B, T) each."""

    def __init__(self, hidden: int):
        super().__init__()
        self.qa_outputs = nn.Linear(hidden, 2)
        nn.init.normal_(self.qa_outputs.weight, std=0.02)
        nn.init.zeros_(self.qa_outputs.bias)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.qa_outputs(matching(hidden, self.qa_outputs.weight))  # (B, T, 2)
        start, end = logits.unbind(-1)
        return start, end


def windows_from_batch(batch: dict[str, Any], start: torch.Tensor, end: torch.Tensor) -> list[Window]:
    """Cut (B, T) start / end logits down to each window's context tokens (CPU), with what maps them to text."""
    start, end = start.detach().float().cpu(), end.detach().float().cpu()
    out = []
    for b, eid in enumerate(batch["example_id"]):
        lo, n = batch["ctx_offset"][b], len(batch["char_starts"][b])
        out.append({"example_id": eid, "window": batch["window"][b], "n_windows": batch["n_windows"][b],
                    "start_logits": start[b, lo:lo + n].clone(), "end_logits": end[b, lo:lo + n].clone(),
                    "char_starts": batch["char_starts"][b], "char_ends": batch["char_ends"][b],
                    "context": batch["context"][b], "answers": batch["answers"][b]})
    return out


def window_candidates(win: Window, n_best: int, max_answer_length: int) -> list[tuple[float, int, int]]:
    """(score, char_start, char_end) of the n-best valid spans of one window; score = start + end logit."""
    start, end = win["start_logits"], win["end_logits"]  # (n_ctx,) each
    k = min(n_best, start.numel())
    s_val, s_idx = start.topk(k)
    e_val, e_idx = end.topk(k)
    scores = s_val[:, None] + e_val[None, :]  # (k, k): every start with every end
    length = e_idx[None, :] - s_idx[:, None]
    valid = (length >= 0) & (length < max_answer_length)
    out = []
    for i, j in valid.nonzero().tolist():
        s, e = int(s_idx[i]), int(e_idx[j])
        out.append((float(scores[i, j]), win["char_starts"][s], win["char_ends"][e]))
    return out


def best_answers(windows: list[Window], n_best: int, max_answer_length: int, top_k: int) -> list[dict[str, Any]]:
    """Ranked distinct answers of one question over all its windows, with score and probability.

    The probability is a softmax over the question's distinct candidates (comparable across
    questions and snippets, which raw logits are not).
    """
    context = windows[0]["context"]
    best: dict[str, float] = {}
    for win in windows:
        for score, cs, ce in window_candidates(win, n_best, max_answer_length):
            text = context[cs:ce]
            if text.strip() and score > best.get(text, float("-inf")):
                best[text] = score
    if not best:
        return [{"answer": "", "score": 0.0, "probability": 0.0}]
    ranked = sorted(best.items(), key=lambda kv: -kv[1])
    probs = torch.tensor([s for _, s in ranked]).softmax(0).tolist()
    return [{"answer": t, "score": round(s, 4), "probability": round(p, 6)}
            for (t, s), p in zip(ranked[:top_k], probs[:top_k])]


def rank_per_question(answers: dict[str, list[dict[str, Any]]], groups: dict[str, str], k: int) -> dict[str, list[str]]:
    """Merge the snippets' candidates of each question: best probability per normalised text, top k."""
    merged: dict[str, dict[str, tuple[float, str]]] = defaultdict(dict)
    for sid, cands in answers.items():
        slot = merged[groups[sid]]
        for c in cands:
            key = normalize_answer(c["answer"])
            if key and c["probability"] > slot.get(key, (-1.0, ""))[0]:
                slot[key] = (c["probability"], c["answer"])
    return {q: [text for _, text in sorted(slot.values(), key=lambda v: -v[0])[:k]] for q, slot in merged.items()}


def score_windows(windows: list[Window], opts: Any) -> dict[str, float]:
    """All metrics of an epoch's windows: SQuAD EM / F1 per id, plus factoid measures per grouped question."""
    by_id: dict[str, list[Window]] = defaultdict(list)
    for w in windows:
        by_id[w["example_id"]].append(w)
    answers = {i: best_answers(ws, opts.n_best, opts.max_answer_length, opts.top_k) for i, ws in by_id.items()}
    golds = {i: json.loads(ws[0]["answers"]) for i, ws in by_id.items()}
    metrics = squad_metrics({i: a[0]["answer"] for i, a in answers.items()}, golds)
    groups = question_groups(list(by_id), opts.question_groups)
    if groups is not None:
        q_golds: dict[str, list[str]] = defaultdict(list)
        for i, g in golds.items():
            q_golds[groups[i]] += g
        metrics.update(factoid_metrics(rank_per_question(answers, groups, opts.top_k), q_golds, k=opts.top_k))
    return metrics


class QAModule(TaskModule):
    task = "qa"
    monitor, monitor_mode = "val_f1", "max"

    def build_head(self) -> nn.Module:
        self._windows: dict[str, dict[tuple[str, int], Window]] = {"val": {}, "test": {}, "predict": {}}
        return SpanHead(self.backbone.cfg.hidden_size)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = self.backbone(batch["input_ids"], attention_mask=batch["attention_mask"],
                            token_type_ids=batch.get("token_type_ids"), return_logits=False)
        start, end = self.head(out.hidden_states)
        pad = batch["attention_mask"] == 0
        return {"start_logits": start.float().masked_fill(pad, -1e4), "end_logits": end.float().masked_fill(pad, -1e4)}

    def loss(self, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> torch.Tensor:
        return 0.5 * (F.cross_entropy(out["start_logits"], batch["start_positions"])
                      + F.cross_entropy(out["end_logits"], batch["end_positions"]))

    def _store(self, stage: str, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> list[Window]:
        """Keep each window's context-token logits keyed by (id, window): duplicates (padded DDP) collapse."""
        stored = windows_from_batch(batch, out["start_logits"], out["end_logits"])
        for win in stored:
            self._windows[stage][(win["example_id"], win["window"])] = win
        return stored

    def update_metrics(self, stage: str, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> None:
        self._store(stage, batch, out)

    def metrics_for(self, stage: str) -> dict[str, float]:
        windows = self._windows[stage]
        self._windows[stage] = {}
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            parts: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, windows)
            windows = {k: v for part in parts for k, v in part.items()}
        return score_windows(list(windows.values()), self.opts)

    def predict_records(self, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        pending = self._windows["predict"]
        self._store("predict", batch, out)
        records = []
        for eid in dict.fromkeys(batch["example_id"]):
            wins = [w for (i, _), w in pending.items() if i == eid]
            if len(wins) == wins[0]["n_windows"]:
                top = best_answers(wins, self.opts.n_best, self.opts.max_answer_length, self.opts.top_k)
                records.append({"id": eid, "answer": top[0]["answer"], "score": top[0]["score"], "top_k": top})
                for w in wins:
                    del pending[(eid, w["window"])]
        return records

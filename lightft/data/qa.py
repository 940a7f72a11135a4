"""Extractive QA data: SQuAD v1.1 JSON (BioASQ in SQuAD form too) -> overlapping windows of question + context.

Each question is encoded as `[CLS] question [SEP] context-window [SEP]`. A context longer than the
room left by `--max-length` is cut into windows that overlap by `--doc-stride` tokens (the
`tokenizers`/Hugging Face meaning of stride: shared tokens, not the step), so no part of a context is
ever dropped. The gold answer's character span is mapped to token start/end through the tokenizer's
character offsets; a window that does not hold the whole answer points both at position 0 ([CLS],
"no answer here"). Every window keeps what post-processing needs to turn token logits back into
text: the example id, its window index and count, the character offsets of its context tokens,
the context and the gold answers. Windowing is done here over the context tokens, so it works the
same for every encoder tokenizer that has [CLS] and [SEP].
"""

from __future__ import annotations

import json
from typing import Any, Optional

import torch

from lightft.data.base import TaskDataModule, pad_sequences
from lightft.data.cache import Example
from lightft.data.readers import read_text
from lightft.errors import LightftError, escape_for_terminal, excerpt
from lightft.question_ids import question_groups
from lightft.textfile import parse_json


def read_squad(path: str, need_answers: bool) -> list[dict[str, Any]]:
    """Flat list of {id, question, context, answers: [(text, start)]}; any defect names the question id."""
    data = parse_json(read_text(path), path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise LightftError(f"{path}: expected SQuAD JSON: {{\"data\": [{{\"paragraphs\": [...]}}]}} at the top level")
    out = []
    for a, article in enumerate(data["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise LightftError(f"{path}: data[{a}] has no 'paragraphs' list")
        for p, para in enumerate(paragraphs):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            if not isinstance(para, dict) or "qas" not in para:
                raise LightftError(f"{where}: missing field 'qas'")
            if not isinstance(para["qas"], list):
                raise LightftError(f"{where}: 'qas' must be a list of questions, not {excerpt(para['qas'], 40)}")
            for n, qa in enumerate(para["qas"]):
                out.append(_check_question(where, n, para, qa, need_answers))
    return out


def _check_question(where: str, n: int, para: dict[str, Any], qa: Any, need_answers: bool) -> dict[str, Any]:
    if not isinstance(qa, dict) or "id" not in qa:
        raise LightftError(f"{where}.qas[{n}]: missing field 'id'")
    qid = str(qa["id"])
    at = f"{where}: question {escape_for_terminal(qid, 80)}"
    context = para.get("context")
    if not isinstance(context, str):
        raise LightftError(f"{at}: missing field 'context' in its paragraph")
    if not context.strip():
        raise LightftError(f"{at}: empty context")
    question = qa.get("question")
    if not isinstance(question, str) or not question.strip():
        raise LightftError(f"{at}: missing or empty field 'question'")
    answers = qa.get("answers")
    if answers is None or (need_answers and not answers):
        if need_answers:
            raise LightftError(f"{at}: missing field 'answers' (training and validation need at least one)")
        answers = []
    if not isinstance(answers, list):
        raise LightftError(f"{at}: 'answers' must be a list of {{\"text\", \"answer_start\"}}")
    spans = []
    for ans in answers:
        if not isinstance(ans, dict) or not isinstance(ans.get("text"), str) or not isinstance(ans.get("answer_start"), int):
            raise LightftError(f"{at}: each answer needs 'text' (string) and 'answer_start' (integer); got {excerpt(ans)}")
        text, start = ans["text"], ans["answer_start"]
        if not text.strip():
            raise LightftError(f"{at}: empty answer text")
        if context[start : start + len(text)] != text:
            raise LightftError(f"{at}: answer_start {start} does not match the answer text {excerpt(text)} "
                               f"(context there reads {excerpt(context[max(0, start):start + len(text)])})")
        spans.append((text, start))
    return {"id": qid, "question": question, "context": context, "answers": spans}


def char_span_to_tokens(starts: list[int], ends: list[int], char_start: int, char_end: int) -> Optional[tuple[int, int]]:
    """(first, last) token index covering [char_start, char_end) of the context, or None if no token does."""
    first = next((i for i, e in enumerate(ends) if e > char_start), None)
    last = next((i for i in range(len(starts) - 1, -1, -1) if starts[i] < char_end), None)
    if first is None or last is None or first > last:
        return None
    return first, last


def window_starts(n_tokens: int, room: int, stride: int) -> list[int]:
    """Start token of each window over `n_tokens` context tokens; windows of `room` overlap by `stride`."""
    starts, step = [0], room - stride
    while starts[-1] + room < n_tokens:
        starts.append(starts[-1] + step)
    return starts


class QADataModule(TaskDataModule):
    task = "qa"

    def build_examples(self, path: str, split: str) -> tuple[list[Example], dict[str, Any]]:
        o, tok = self.opts, self.tokenizer
        if tok.cls_id is None or tok.sep_id is None:
            raise LightftError(f"{tok.source}: qa needs an encoder tokenizer with [CLS] and [SEP] tokens")
        stats = {"questions": 0, "windows": 0, "split_contexts": 0, "question_truncated": 0, "answer_outside_window": 0}
        examples: list[Example] = []
        for rec in read_squad(path, need_answers=split in ("train", "val")):
            if self.full(examples, split, stats):
                break
            stats["questions"] += 1
            q_ids = tok.encode(rec["question"], add_special_tokens=False)
            max_q = min(o.max_query_length, o.max_length // 2)
            if len(q_ids) > max_q:
                stats["question_truncated"] += 1
                q_ids = q_ids[:max_q]
            ctx = tok.encode_with_offsets(rec["context"], add_special_tokens=False)
            if not ctx.ids:
                raise LightftError(f"{path}: question {rec['id']}: the context has no tokens (empty context)")
            starts, ends = [s for s, _ in ctx.offsets], [e for _, e in ctx.offsets]
            room = o.max_length - len(q_ids) - 3  # [CLS] q [SEP] ... [SEP]
            if room <= o.doc_stride:
                raise LightftError(f"question {rec['id']}: --max-length {o.max_length} leaves {room} context tokens "
                                   f"per window, not more than --doc-stride {o.doc_stride}; raise --max-length or "
                                   "lower --doc-stride")
            gold = None
            if rec["answers"]:
                text, a_start = rec["answers"][0]  # the first answer trains; all of them score
                gold = char_span_to_tokens(starts, ends, a_start, a_start + len(text))
                if gold is None:
                    raise LightftError(f"{path}: question {rec['id']}: answer {excerpt(text)} covers no context token")
            win_starts = window_starts(len(ctx.ids), room, o.doc_stride)
            stats["split_contexts"] += len(win_starts) > 1
            golds = json.dumps([t for t, _ in rec["answers"]], ensure_ascii=False)
            for w, lo in enumerate(win_starts):
                hi = min(lo + room, len(ctx.ids))
                prefix = [tok.cls_id] + q_ids + [tok.sep_id]
                s_pos = e_pos = 0
                if gold is not None and lo <= gold[0] and gold[1] < hi:
                    s_pos, e_pos = gold[0] - lo + len(prefix), gold[1] - lo + len(prefix)
                elif gold is not None:
                    stats["answer_outside_window"] += 1
                examples.append({
                    "input_ids": prefix + ctx.ids[lo:hi] + [tok.sep_id],
                    "token_type_ids": [0] * len(prefix) + [1] * (hi - lo + 1),
                    "start_position": s_pos, "end_position": e_pos,
                    "ctx_offset": len(prefix), "char_starts": starts[lo:hi], "char_ends": ends[lo:hi],
                    "example_id": rec["id"], "window": w, "n_windows": len(win_starts),
                    "context": rec["context"], "answers": golds,
                })
            stats["windows"] += len(win_starts)
        return examples, stats

    def split(self, examples: list[Example]) -> tuple[list[Example], list[Example]]:
        """Seeded hold-out of whole questions (all windows; all snippets of a BioASQ question), never parts."""
        ids = list(dict.fromkeys(e["example_id"] for e in examples))
        groups = question_groups(ids, self.opts.question_groups) or {i: i for i in ids}
        keys = list(dict.fromkeys(groups.values()))
        g = torch.Generator().manual_seed(self.opts.seed)
        n_val = max(1, int(len(keys) * self.opts.val_fraction))
        if n_val >= len(keys):
            raise LightftError(f"{self.files['train']}: too few questions ({len(keys)}) to hold out a validation "
                               "split; pass --val or lower --val-fraction")
        held = {keys[i] for i in torch.randperm(len(keys), generator=g)[:n_val].tolist()}
        return ([e for e in examples if groups[e["example_id"]] not in held],
                [e for e in examples if groups[e["example_id"]] in held])

    def setup(self, stage: Optional[str] = None) -> None:
        super().setup(stage)
        for split in ("val", "eval"):  # --limit-val cuts windows: never keep part of a question's windows
            data = self.datasets.get(split)
            if data and sum(e["example_id"] == data[-1]["example_id"] for e in data) < data[-1]["n_windows"]:
                last = data[-1]["example_id"]
                self.datasets[split] = [e for e in data if e["example_id"] != last]
                if not self.datasets[split]:
                    raise LightftError(f"--limit-val {self.opts.limit_val} keeps no complete question "
                                       f"(question {last} has {data[-1]['n_windows']} windows); raise it")

    def collate(self, examples: list[Example]) -> dict[str, Any]:
        batch: dict[str, Any] = {
            **self.padded_inputs(examples),
            "token_type_ids": pad_sequences([e["token_type_ids"] for e in examples], 0),
            "start_positions": torch.tensor([e["start_position"] for e in examples]),
            "end_positions": torch.tensor([e["end_position"] for e in examples]),
        }
        # Plain Python lists: post-processing turns logits back into text with them.
        for key in ("ctx_offset", "char_starts", "char_ends", "example_id", "window", "n_windows", "context", "answers"):
            batch[key] = [e[key] for e in examples]
        return batch

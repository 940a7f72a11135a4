"""Few-shot prompting evaluation: k demonstrations drawn with a seed, greedy answers, normalised exact match.

Data: JSONL (or a JSON list) of {"question", "answer"[, "answers"]} or {"text", "label"}. Each
evaluated item gets k demonstrations from the pool (the same file unless --pool is given; the item
itself is never its own demonstration) in the "Q: ... A: ..." format by default. Answers are read
greedily up to the first newline and scored by SQuAD-style normalised exact match against any of
`answers`. Each k is run for several seeds (different demonstrations); 0-shot has no randomness
and is run once.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional

from lightft.errors import LightftError
from lightft.generate import SamplingOptions, generate_text, load_for_generation
from lightft.tasks.qa_metrics import exact_match  # SQuAD-normalised, as the QA task scores

DEFAULT_TEMPLATE = "Q: {question}\nA: {answer}"
SEPARATOR = "\n\n"


@dataclass
class QAItem:
    question: str
    answers: list[str]  # the first one is shown in demonstrations
    line: int


def read_items(path: str) -> list[QAItem]:
    from lightft.data.readers import read_records, require_field

    items = []
    for line, rec in read_records(path):
        hint = 'fewshot JSONL: {"question", "answer"[, "answers"]} or {"text", "label"} per line'
        if "question" in rec or "text" not in rec:
            question = require_field(path, line, rec, "question", hint)
            answer = require_field(path, line, rec, "answer", hint)
        else:
            question, answer = rec["text"], require_field(path, line, rec, "label", hint)
        answers = rec.get("answers") or [answer]
        if not isinstance(question, str) or not isinstance(answers, list) or not all(
                isinstance(a, (str, int, float)) for a in [answer, *answers]):
            raise LightftError(f"{path}:{line}: question must be a string and answer(s) strings")
        answers = [str(answer)] + [str(a) for a in answers if str(a) != str(answer)]
        if not question.strip() or not answers[0].strip():
            raise LightftError(f"{path}:{line}: empty question or answer")
        items.append(QAItem(question.strip(), answers, line))
    return items


def fill(template: str, question: str, answer: Optional[str]) -> str:
    """The template with {question}; with answer None, cut just before {answer} (the model's cue)."""
    if answer is None:
        return template.split("{answer}")[0].replace("{question}", question).rstrip(" ")
    return template.replace("{question}", question).replace("{answer}", answer)


def build_prompt(template: str, demos: list[QAItem], item: QAItem) -> str:
    shots = [fill(template, d.question, d.answers[0]) for d in demos]
    return SEPARATOR.join(shots + [fill(template, item.question, None)])


def choose_demos(pool: list[QAItem], k: int, item: QAItem, rng: random.Random) -> list[QAItem]:
    candidates = [d for d in pool if d.question != item.question]
    if k > len(candidates):
        raise LightftError(f"--shots {k}: the demonstration pool has only {len(candidates)} other items")
    return rng.sample(candidates, k)


def score(model, tokenizer, items: list[QAItem], prompts: list[str], max_new_tokens: int,
          batch_size: int) -> tuple[float, list[dict[str, Any]]]:
    """Greedy answers (sorted by prompt length so batches pad little) and their exact-match accuracy."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    opts = SamplingOptions(max_new_tokens=max_new_tokens, stop=("\n",))
    gens = generate_text(model, tokenizer, [prompts[i] for i in order], opts, template=None, batch_size=batch_size)
    preds: list[Optional[str]] = [None] * len(prompts)
    for i, g in zip(order, gens):
        preds[i] = g.text.strip()
    records = [{"line": it.line, "prediction": p, "correct": bool(exact_match(p, it.answers))}
               for it, p in zip(items, preds)]
    return sum(r["correct"] for r in records) / max(1, len(records)), records


def run_fewshot(model_dir: str, data: str, shots: list[int], seeds: int = 5, pool_file: Optional[str] = None,
                template: str = DEFAULT_TEMPLATE, limit: Optional[int] = None, max_new_tokens: int = 16,
                batch_size: int = 8, dtype: str = "float32", seed: int = 0, kernels: str = "auto") -> dict[str, Any]:
    """Accuracy per number of shots: mean and sample std over `seeds` demonstration draws."""
    if "{question}" not in template or "{answer}" not in template:
        raise LightftError("--template must contain {question} and {answer}")
    if seeds < 1 or any(k < 0 for k in shots):
        raise LightftError("--seeds must be >= 1 and --shots non-negative")
    items = read_items(data)
    pool = read_items(pool_file) if pool_file else items
    if limit:
        items = items[:limit]
    model, tokenizer, _ = load_for_generation(model_dir, dtype, chat=False, kernels=kernels)
    results = []
    start = time.perf_counter()
    for k in shots:
        runs = [seed] if k == 0 else [seed + s for s in range(seeds)]
        accs = []
        for s in runs:
            rng = random.Random(s)
            prompts = [build_prompt(template, choose_demos(pool, k, it, rng), it) for it in items]
            acc, _ = score(model, tokenizer, items, prompts, max_new_tokens, batch_size)
            accs.append(acc)
            print(f"[fewshot] {k}-shot seed {s}: accuracy {acc:.4f}", file=sys.stderr)
        results.append({"shots": k, "accuracy_mean": round(statistics.mean(accs), 4),
                        "accuracy_std": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0,
                        "per_seed": [round(a, 4) for a in accs]})
    return {"model": model_dir, "data": data, "items": len(items), "seeds": seeds, "template": template,
            "results": results, "seconds": round(time.perf_counter() - start, 1)}


def table(report: dict[str, Any]) -> str:
    lines = [f"shots | accuracy (mean ± std over {report['seeds']} seeds; 0-shot is deterministic)",
             "----- | ------------------------------"]
    lines += [f"{r['shots']:>5} | {r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f}" for r in report["results"]]
    return "\n".join(lines)

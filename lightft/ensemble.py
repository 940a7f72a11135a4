"""Ensembles of trained classify runs: `lightft eval classify --model A,B` and `lightft predict classify --model A,B`.

Each member reads the file with its own tokenizer and options, exactly as `lightft predict classify
--model A` does, so the members may be different models (a decoder and an encoder: SmolLM2 + LoRA
beside MiniLM is the SST-2 ensemble recipe, `scripts/sst2.sh ensemble`). Their probabilities are
averaged record by record, the file's line numbers pairing them up, with equal weights: weights
fitted on the file being scored would flatter the figure. Probabilities rather than logits, so that a
confident member and a cautious one count on one scale (the same mean as distillation's teachers:
lightft/train/averaging.py).

Why: models that learned differently make different mistakes. On SST-2's honest split the SmolLM2
recipe alone scores 0.911 and MiniLM's 0.907, the two averaged 0.929 (five seeds; benchmarks/RESULTS.md,
session 18), for the price of running both at inference.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torchmetrics.classification import MulticlassF1Score

from lightft.errors import LightftError
from lightft.evaluate import predict_with_data
from lightft.options import Options
from lightft.train.averaging import ByLine, average_by_line

FLOOR = 1e-6  # the resolution of the members' probabilities (predict writes 6 decimals): no log(0) in the loss


def member_records(task: str, models: list[str], data: str, opts: Options,
                   labelled: bool) -> tuple[list[str], ByLine, dict[int, str]]:
    """(label names, averaged probabilities by line in that order, gold label by line: '' when unlabelled)."""
    if task != "classify":
        raise LightftError(f"--model {','.join(models)}: ensembles (several runs, comma-separated) are "
                           f"implemented for classify, not {task}; give one run")
    records, dm = predict_with_data(task, models[0], data, opts, labelled=labelled)
    names = [str(n) for n in records[0]["probabilities"]] if records else []
    gold = {e["line"]: e["label"] for e in dm.datasets["eval"]}

    def by_line(recs: list[dict[str, Any]]) -> ByLine:
        return {r["line"]: [r["probabilities"][n] for n in names] for r in recs}

    def each_member() -> Iterator[tuple[str, ByLine]]:
        yield models[0], by_line(records)
        for model in models[1:]:
            recs, _ = predict_with_data(task, model, data, opts)
            mine = [str(n) for n in recs[0]["probabilities"]] if recs else []
            if sorted(mine) != sorted(names):
                raise LightftError(f"--model {model}: its labels ({', '.join(mine)}) are not those of {models[0]} "
                                   f"({', '.join(names)}); every member of an ensemble must predict the same labels")
            yield model, by_line(recs)

    probs = average_by_line(each_member(), lambda model, n, before: (
        f"--model {model}: predicted {n} records of {data}, {models[0]} {before}; each member must read every "
        "record (a run trained with --overlong drop drops long ones: retrain it without)"))
    return names, probs, gold


def predict_ensemble(task: str, models: list[str], data: str, opts: Options) -> list[dict[str, Any]]:
    """One record per input line, as `lightft predict classify` writes for one run, from the averaged
    probabilities."""
    names, probs, _ = member_records(task, models, data, opts, labelled=False)
    return [{"line": line, "label": names[max(range(len(p)), key=p.__getitem__)],
             "probabilities": {n: round(x, 6) for n, x in zip(names, p)}} for line, p in sorted(probs.items())]


def evaluate_ensemble(task: str, models: list[str], data: str, opts: Options) -> dict[str, float]:
    """The ensemble's loss (mean negative log of the averaged probability of the gold label), accuracy and
    macro-F1 over the labelled records: the keys `lightft eval classify` prints for one run."""
    names, probs, gold = member_records(task, models, data, opts, labelled=True)
    index = {n: i for i, n in enumerate(names)}
    lines = [line for line in sorted(probs) if gold.get(line)]
    line = next((line for line in lines if gold[line] not in index), None)
    if line is not None:
        raise LightftError(f"{data}:{line}: label {gold[line]!r} is not one the ensemble predicts "
                           f"({', '.join(names)})")
    p = torch.tensor([probs[line] for line in lines], dtype=torch.float64)  # (N, labels)
    y = torch.tensor([index[gold[line]] for line in lines])  # (N,)
    loss = -sum(math.log(max(float(p[i, y[i]]), FLOOR)) for i in range(len(lines))) / len(lines)
    pred = p.argmax(-1)
    f1 = MulticlassF1Score(len(names), average="macro")(pred, y)
    return {"loss": round(loss, 6), "accuracy": round(float((pred == y).double().mean()), 6),
            "macro_f1": round(float(f1), 6)}

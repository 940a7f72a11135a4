"""What training leaves for `lightft report`: token-length summaries, a few validation samples, report.html.

- `data_record` is run.json's `data`: each split's statistics plus a summary of its token lengths.
- `collect_samples` runs the first validation examples through the trained module once and writes
  them as text (input, gold, prediction) to RUN/samples.json: predicted labels (classify), entities
  (ner), answers (qa), masked-token guesses (mlm), and for lm / instruct the model's next-token
  choices along the gold continuation (teacher forcing: what the training loss scores).
- `write_extras` writes samples.json and, when matplotlib (the `plot` extra) is installed,
  RUN/report.html. A report that cannot be made is one line on stderr, never a failed training.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from lightft.checkpoint import write_atomic_json
from lightft.errors import LightftError
from lightft.report.lengths import length_summary
from lightft.report.runfiles import SAMPLES_FILE
from lightft.tasks.ner import entity_spans
from lightft.tasks.qa_metrics import exact_match

N_SAMPLES = 6
TEXT_CHARS = 400  # each text is cut to this many characters in samples.json

Sample = dict[str, Any]  # input, gold, predicted (text) and correct (bool or None)


def data_record(dm: Any) -> dict[str, Any]:
    """run.json's `data`: every split's statistics and token-length summary (see lightft/report/lengths.py)."""
    out: dict[str, Any] = {}
    for split, examples in dm.datasets.items():
        lengths = [len(e[dm.length_key]) for e in examples]
        out[split] = {**dm.stats.get(split, {}), "lengths": length_summary(lengths, dm.opts.max_length)}
    return out


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…"


def _classify(module, batch, out, examples, tok) -> list[Sample]:
    records = module.predict_records(batch, out)
    return [{"input": _cut(tok.decode(e["input_ids"])), "gold": e["label"],
             "predicted": f"{r['label']} (p={r['probabilities'][r['label']]:.2f})", "correct": r["label"] == e["label"]}
            for e, r in zip(examples, records)]


def _entities(text: str, starts: list[int], ends: list[int], tags: list[str]) -> list[str]:
    return [f"{text[starts[a]:ends[b - 1]]} ({kind})" for kind, a, b in entity_spans(tags)]


def _ner(module, batch, out, examples, tok) -> list[Sample]:
    records = module.predict_records(batch, out)
    samples = []
    for e, r in zip(examples, records):
        gold = _entities(e["text"], e["starts"], e["ends"], e["tags"].split())
        pred = [f"{x['text']} ({x['type']})" for x in r["entities"]]
        samples.append({"input": _cut(e["text"]), "gold": "; ".join(gold) or "(none)",
                        "predicted": "; ".join(pred) or "(none)", "correct": sorted(gold) == sorted(pred)})
    return samples


def _qa(module, batch, out, examples, tok) -> list[Sample]:
    records = {r["id"]: r for r in module.predict_records(batch, out)}
    samples = []
    for e in examples:
        if e["window"] != 0:
            continue
        question = tok.decode(e["input_ids"][1 : e["ctx_offset"] - 1])
        golds = json.loads(e["answers"])
        answer = records[e["example_id"]]["answer"]
        samples.append({"input": _cut(f"{question} | {e['context']}"), "gold": " / ".join(golds),
                        "predicted": answer, "correct": bool(exact_match(answer, golds))})
    return samples


def _token(tok: Any, t: int) -> str:
    """A token's text; ids past the tokenizer's vocabulary (models often pad theirs) show as <id>."""
    return tok.backend.id_to_token(t) or f"<{t}>"


def _mlm(module, batch, out, examples, tok) -> list[Sample]:
    guesses = out["logits"].argmax(-1).tolist()  # (M,): masked positions of all rows, row by row
    targets = out["targets"].tolist()
    samples, at = [], 0
    for row, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        n = sum(x != -100 for x in labels)
        gold, pred = targets[at : at + n], guesses[at : at + n]
        at += n
        real = [t for t in row if t != tok.pad_id]
        samples.append({"input": _cut(tok.decode(real, skip_special_tokens=False)),
                        "gold": " ".join(_token(tok, t) for t in gold),
                        "predicted": " ".join(_token(tok, t) for t in pred), "correct": gold == pred})
    return samples


def _causal(module, batch, out, examples, tok) -> list[Sample]:
    logits = module.backbone(batch["input_ids"], attention_mask=batch.get("attention_mask"),
                             position_ids=batch.get("position_ids"), segment_ids=batch.get("segment_ids")).logits
    choice = logits.argmax(-1).tolist()  # (B, T): the model's next token after each position
    samples = []
    for ids, labels, picks in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), choice):
        # the first run of scored targets: position t predicts labels[t + 1]
        scored = [t for t in range(len(ids) - 1) if labels[t + 1] != -100]
        if not scored:
            continue
        run = [scored[0]]
        for t in scored[1:]:
            if t != run[-1] + 1 or len(run) == 48:
                break
            run.append(t)
        gold, pred = [labels[t + 1] for t in run], [picks[t] for t in run]
        hits = sum(g == p for g, p in zip(gold, pred))
        samples.append({"input": _cut(tok.decode(ids[: run[0] + 1], skip_special_tokens=False)[-TEXT_CHARS:]),
                        "gold": tok.decode(gold, skip_special_tokens=False),
                        "predicted": f"{tok.decode(pred, skip_special_tokens=False)}  [{hits}/{len(gold)} tokens]",
                        "correct": None})
    return samples


SAMPLERS: dict[str, tuple[Callable[..., list[Sample]], str]] = {
    "classify": (_classify, "The first validation examples: gold label and the trained model's prediction."),
    "ner": (_ner, "The first validation sentences: gold and predicted entities."),
    "qa": (_qa, "The first validation questions (question | context): gold answers and the predicted span."),
    "mlm": (_mlm, "The first validation blocks with their masks: the masked tokens and the model's guesses."),
    "lm": (_causal, "Teacher forcing on the first validation rows: the gold continuation and the model's "
                    "next-token choice at each of its positions (what the training loss scores)."),
    "instruct": (_causal, "Teacher forcing on the first validation examples: the gold response and the model's "
                          "next-token choice at each of its positions (what the training loss scores)."),
}


def pick_examples(examples: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The first n examples; for qa every window of the first n questions (an answer needs them all)."""
    if examples and "example_id" in examples[0]:
        ids = list(dict.fromkeys(e["example_id"] for e in examples))[:n]
        return [e for e in examples if e["example_id"] in ids]
    return examples[:n]


@torch.no_grad()
def collect_samples(module: Any, dm: Any, tokenizer: Any, n: int = N_SAMPLES) -> dict[str, Any]:
    """{"what": description, "samples": [...]} from the first validation examples (see module docstring)."""
    sampler, what = SAMPLERS[module.task]
    examples = pick_examples(dm.datasets.get("val") or [], n)
    if not examples:
        return {"what": what, "samples": []}
    batch = dm.eval_collate(examples)
    batch = {k: v.to(module.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    was_training = module.training
    module.eval()
    try:
        samples = sampler(module, batch, module(batch), examples, tokenizer)
    finally:
        module.train(was_training)
    return {"what": what, "samples": samples}


def write_extras(run_dir: Path, module: Any, dm: Any, tokenizer: Any, trainer: Any) -> None:
    """samples.json, then report.html when matplotlib is installed (see the module docstring).

    Called on global rank 0 only. Under FSDP / DeepSpeed the weights are sharded over the ranks and
    one rank cannot run a forward pass alone: samples.json is left out there.
    """
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

    if trainer.world_size == 1 or isinstance(trainer.strategy, (DDPStrategy, SingleDeviceStrategy)):
        write_atomic_json(run_dir / SAMPLES_FILE, collect_samples(module, dm, tokenizer))
    if importlib.util.find_spec("matplotlib") is None:
        return
    from lightft.report.html import write_report

    try:
        out = write_report(run_dir)
        print(f"[report] {out}", file=sys.stderr)
    except LightftError as e:
        print(f"[report] not written: {e}", file=sys.stderr)

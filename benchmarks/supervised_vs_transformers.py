"""Supervised fine-tuning, lightft vs transformers Trainer (+ peft for LoRA) with the same model, data and settings.

One script run trains both on identical example lists (SST-2 classification or CoNLL-2003 NER from
../shared/data), evaluates both with the same metric code (accuracy; entity F1 via lightft's
seqeval-semantics span extraction), and prints one JSON line per side plus the wall-time ratio
(lightft / transformers: training plus one validation pass per epoch on both sides, tokenisation
and model loading excluded). The load average is printed
too: on a shared machine the ratio is only meaningful when it is steady.

    python benchmarks/supervised_vs_transformers.py --task classify --limit-train 2000 --limit-val 500
    python benchmarks/supervised_vs_transformers.py --task ner --limit-train 2000 --epochs 1
    python benchmarks/supervised_vs_transformers.py --task classify --mode lora --lr 1e-3

transformers and peft are used here only as baselines (never at lightft's run time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from common import minilm_dir  # noqa: E402  (benchmarks/ is on sys.path when this script runs)

DATA = REPO.parent / "shared" / "data"


def load_data(task: str, limit_train: int, limit_val: int) -> tuple[list, list]:
    """Training and validation examples: (text, label) pairs, or (words, tags) sentences."""
    if task == "classify":
        def read(name: str, n: int) -> list:
            rows = [json.loads(line) for line in (DATA / "sst2" / name).read_text().splitlines()[:n]]
            return [(r["text"], str(r["label"])) for r in rows]
        return read("train.jsonl", limit_train), read("validation.jsonl", limit_val)
    from lightft.data.ner import read_sentences

    def sents(name: str, n: int) -> list:
        return [(w, t) for _, w, t, _ in read_sentences(str(DATA / "conll2003" / name), None)[:n]]
    return sents("train.txt", limit_train), sents("valid.txt", limit_val)


def write_files(task: str, train: list, val: list, folder: Path) -> tuple[str, str]:
    """The same examples as files lightft reads (JSONL for both tasks)."""
    paths = []
    for name, rows in (("train", train), ("val", val)):
        p = folder / f"{name}.jsonl"
        if task == "classify":
            lines = [json.dumps({"text": t, "label": y}) for t, y in rows]
        else:
            lines = [json.dumps({"tokens": w, "tags": t}) for w, t in rows]
        p.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(str(p))
    return paths[0], paths[1]


def run_lightft(args: argparse.Namespace, train_file: str, val_file: str, out: Path) -> dict:
    from lightft.options import Options
    from lightft.train.run import train

    lora = dict(lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                lora_targets="all-linear") if args.mode == "lora" else {}  # LoRA flags with --full are refused
    opts = Options(model=args.model, train=train_file, val=val_file, out=str(out), overwrite=True,
                   lora=args.mode == "lora", **lora, epochs=args.epochs,
                   batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, weight_decay=0.01,
                   max_length=args.max_length, seed=args.seed, pooling="pooler", classifier_dropout=0.1,
                   progress=False, cache=False, log_every=50, group_by_length=args.group_by_length,
                   precision="32-true", dtype="float32")  # the Trainer side below runs fp32 (no bf16 flag)
    metrics = train(args.task, opts)
    score = metrics["val_accuracy"] if args.task == "classify" else metrics["val_f1"]
    return {"side": "lightft", "score": score, "train_seconds": metrics["train_seconds"], "steps": metrics["steps"]}


def run_transformers(args: argparse.Namespace, train: list, val: list, out: Path) -> dict:
    import transformers
    from transformers import AutoTokenizer, Trainer, TrainingArguments

    from lightft.tasks.ner import EntityF1

    tok = AutoTokenizer.from_pretrained(args.model)
    if args.task == "classify":
        names = sorted({y for _, y in train}, key=lambda s: (len(s), s))
        enc = lambda rows: [{**tok(t, truncation=True, max_length=args.max_length), "labels": names.index(y)}
                            for t, y in rows]
        model = transformers.AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(names))
        collator = transformers.DataCollatorWithPadding(tok)
    else:
        names = ["O"] + sorted({t for _, tags in train for t in tags} - {"O"}, key=lambda t: (t[2:], t[:2]))

        def enc(rows):
            out_rows = []
            for words, tags in rows:
                e = tok(words, is_split_into_words=True, truncation=True, max_length=args.max_length)
                prev, labels = None, []
                for w in e.word_ids():
                    labels.append(names.index(tags[w]) if w is not None and w != prev else -100)
                    prev = w
                out_rows.append({**e, "labels": labels})
            return out_rows
        model = transformers.AutoModelForTokenClassification.from_pretrained(args.model, num_labels=len(names))
        collator = transformers.DataCollatorForTokenClassification(tok)
    train_set, val_set = enc(train), enc(val)
    if args.mode == "lora":
        import peft

        task_type = peft.TaskType.SEQ_CLS if args.task == "classify" else peft.TaskType.TOKEN_CLS
        model = peft.get_peft_model(model, peft.LoraConfig(task_type=task_type, r=args.lora_r,
                                                           lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                                                           # lightft's all-linear: q,k,v,o,up,down (not the pooler)
                                                           target_modules=["query", "key", "value", "output.dense",
                                                                           "intermediate.dense"]))
    steps_per_epoch = -(-len(train_set) // args.batch_size)
    targs = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=2 * args.batch_size,
        num_train_epochs=args.epochs, learning_rate=args.lr, weight_decay=0.01, lr_scheduler_type="linear",
        warmup_steps=int(round(args.warmup * steps_per_epoch * args.epochs)), max_grad_norm=1.0, seed=args.seed,
        train_sampling_strategy="group_by_length" if args.group_by_length else "random",
        save_strategy="no", eval_strategy="epoch", report_to="none",
        logging_steps=50, use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False)
    trainer = Trainer(model=model, args=targs, train_dataset=train_set, eval_dataset=val_set, data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    pred = trainer.predict(val_set)
    logits = torch.as_tensor(pred.predictions)
    if args.task == "classify":
        score = float((logits.argmax(-1) == torch.as_tensor(pred.label_ids)).float().mean())
    else:
        metric = EntityF1()
        best = logits.argmax(-1).tolist()
        predicted = []
        for row, (words, _) in zip(best, val):
            ids = tok(words, is_split_into_words=True, truncation=True, max_length=args.max_length).word_ids()
            tags, prev = ["O"] * len(words), None
            for label, w in zip(row, ids):
                if w is not None and w != prev:
                    tags[w] = names[label]
                prev = w
            predicted.append(tags)
        metric.update(predicted, [t for _, t in val])
        score = float(metric.compute()["f1"])
    return {"side": "transformers", "score": score, "train_seconds": round(seconds, 1),
            "steps": trainer.state.global_step}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=("classify", "ner"), default="classify")
    p.add_argument("--mode", choices=("full", "lora"), default="full")
    p.add_argument("--model", default=None, help="HF-layout model folder (default: the packaged MiniLM)")
    p.add_argument("--limit-train", type=int, default=2000)
    p.add_argument("--limit-val", type=int, default=500)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=float, default=0.06)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=float, default=32.0)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--group-by-length", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    args.model = args.model or str(minilm_dir())
    torch.set_num_threads(args.threads)
    train, val = load_data(args.task, args.limit_train, args.limit_val)
    print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "threads": args.threads, "torch": torch.__version__, "loadavg_start": os.getloadavg()[0],
                      **{k: v for k, v in vars(args).items() if k != "model"}}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        train_file, val_file = write_files(args.task, train, val, Path(tmp))
        ours = run_lightft(args, train_file, val_file, Path(tmp) / "lightft")
        print(json.dumps(ours), flush=True)
        theirs = run_transformers(args, train, val, Path(tmp) / "hf")
        print(json.dumps(theirs), flush=True)
    print(json.dumps({"score_difference": round(ours["score"] - theirs["score"], 4),
                      "wall_time_ratio_lightft_over_transformers":
                          round(ours["train_seconds"] / theirs["train_seconds"], 3),
                      "loadavg_end": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()

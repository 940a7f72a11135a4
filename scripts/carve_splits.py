"""Carve honest validation splits from the shared data sets: held-out items share nothing with train.

    python scripts/carve_splits.py DATASET|all --out DIR [--seed 0] [--data ../shared/data]

Writes DIR/DATASET/{train,validation}.* and DIR/DATASET/manifest.json (rule, seed, counts, source
sha256 sums). The folder is built under a temporary name and renamed, so a failed carve leaves the
previous one (or nothing); DIR must lie outside the data folder. Same data + same seed = the same
bytes. Why each rule (issue 16: the shared splits were optimistic where train and validation share
text):

- sst2: GLUE's SST-2 train is made of every phrase of every sentence, and the shared validation was
  drawn from it, so a validation sentence's phrases sit in train. Here both shared files are pooled,
  the maximal records (no other record contains them) that end like a sentence (. ! ?) are the
  candidate sentences, SST2_HELDOUT of them are drawn with the seed, and every record that is one of
  their phrases (a run of whole words, after lower-casing and collapsing spaces) is removed from train.
- conll2003: valid.txt (CoNLL's eng.testa, other Reuters documents) as given; the sentences it shares
  verbatim with train (sports-table boilerplate such as "Scorers :") are counted in the manifest.
- squad: the shared validation is already one whole article (New_York_City) that train lacks; kept
  as given, checked (titles, contexts, questions disjoint).
- bioasq: both files pooled; a question group is every snippet of a question id, joined with any
  other id that shares a question text or a snippet (union-find); whole groups are drawn with the
  seed until BIOASQ_FRACTION of the questions are held out.
- medical_abstracts: MEDICAL_HELDOUT whole abstracts drawn with the seed -> validation.txt.
- capitals_qa: countries drawn with the seed; all items of CAPITALS_EVAL_COUNTRIES countries form the
  evaluation pool (validation.jsonl), the other countries' items the demonstration pool (train.jsonl):
  no country is both a demonstration and a question.
- alpaca: validation.json as given (disjoint from train on (instruction, input) by construction; the
  manifest counts shared instructions and shared outputs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a plain script from a checkout

from lightft.data.readers import iter_json_list, iter_jsonl, read_text  # noqa: E402
from lightft.errors import LightftError  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("LIGHTFT_DATA", REPO.parent / "shared" / "data"))
SST2_HELDOUT = 1000  # GLUE's dev set has 872 sentences; 1,000 keeps the 95% interval near +-1.8 points
BIOASQ_FRACTION = 0.10
MEDICAL_HELDOUT = 250
CAPITALS_EVAL_COUNTRIES = 50  # of 150: ~96 evaluation items, 100 countries of demonstrations

SOURCES = {  # data set -> the shared files it is carved from
    "sst2": ("train.jsonl", "validation.jsonl"), "conll2003": ("train.txt", "valid.txt"),
    "squad": ("train.json", "validation.json"), "bioasq": ("train.json", "validation.json"),
    "medical_abstracts": ("train.txt",), "capitals_qa": ("train.jsonl",), "alpaca": ("train.json", "validation.json"),
}

Files = dict[str, bytes]  # file name -> content of one carved data set
Carved = tuple[Files, dict[str, Any]]  # (files, manifest facts)


# ---- shared helpers ---------------------------------------------------------------------------------

def norm(text: str) -> str:
    """Lower case, single spaces: the form under which two texts count as the same."""
    return " ".join(text.lower().split())


def phrases(text: str) -> set[str]:
    """Every run of whole words of a normalised text (its phrases, itself included)."""
    toks = text.split()
    return {" ".join(toks[i:j]) for i in range(len(toks)) for j in range(i + 1, len(toks) + 1)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def jsonl(records: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def source(data: Path, dataset: str) -> list[Path]:
    """The shared files a data set is carved from (SOURCES), each checked to exist."""
    paths = [data / dataset / n for n in SOURCES[dataset]]
    for p in paths:
        if not p.is_file():
            raise LightftError(f"{p}: not found; point --data at the shared data folder (it holds {dataset}/)")
    return paths


def groups_by_shared_keys(keys: list[list[Any]]) -> list[list[int]]:
    """Records (given by their keys) joined into groups whenever two share any key (union-find)."""
    parent: dict[Any, Any] = {}

    def find(x: Any) -> Any:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for ks in keys:
        for k in ks[1:]:
            parent[find(k)] = find(ks[0])
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, ks in enumerate(keys):
        groups[find(ks[0])].append(i)
    return sorted(groups.values())  # a fixed order before the seeded shuffle


def draw_groups(groups: list[list[int]], size: Callable[[list[int]], int], target: int, seed: int) -> set[int]:
    """Whole groups, in seeded random order, until their total size reaches `target`; returns record indices."""
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    held: set[int] = set()
    total = 0
    for g in order:
        if total >= target:
            break
        held.update(groups[g])
        total += size(groups[g])
    return held


def squad_rows(path: Path) -> list[dict[str, Any]]:
    """One row per (article, paragraph, question) of a SQuAD v1.1 file."""
    data = json.loads(read_text(path))
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise LightftError(f"{path}: not SQuAD v1.1 JSON (expected {{'data': [articles]}})")
    return [{"title": a.get("title", ""), "context": p["context"], "qa": q}
            for a in data["data"] for p in a["paragraphs"] for q in p["qas"]]


def squad_json(rows: list[dict[str, Any]], version: str) -> bytes:
    """Rows back into SQuAD v1.1 layout (articles by title, paragraphs by context, in first-seen order)."""
    articles: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in rows:
        articles.setdefault(r["title"], {}).setdefault(r["context"], []).append(r["qa"])
    data = [{"title": t, "paragraphs": [{"context": c, "qas": qs} for c, qs in paras.items()]}
            for t, paras in articles.items()]
    return json.dumps({"version": version, "data": data}, ensure_ascii=False).encode("utf-8")


def conll_sentences(text: str) -> list[str]:
    """CoNLL sentences as their tokens joined by spaces (-DOCSTART- and blank lines separate)."""
    out, cur = [], []
    for line in text.splitlines():
        if not line.strip() or line.startswith("-DOCSTART-"):
            if cur:
                out.append(" ".join(cur))
            cur = []
        else:
            cur.append(line.split()[0])
    if cur:
        out.append(" ".join(cur))
    return out


# ---- one function per data set ---------------------------------------------------------------------

def carve_sst2(data: Path, seed: int) -> Carved:
    paths = source(data, "sst2")
    rows = [rec for p in paths for _, rec in iter_jsonl(p)]
    for i, r in enumerate(rows):
        if not isinstance(r.get("text"), str) or "label" not in r:
            raise LightftError(f"sst2 record {i + 1}: expected {{'text': str, 'label': ...}}")
    texts = sorted({norm(r["text"]) for r in rows}, key=lambda t: (-len(t.split()), t))
    covered: set[str] = set()  # phrases of longer records seen so far
    sentences = []
    for t in texts:  # longest first: a record is maximal when no longer one contains it
        if t not in covered:
            if t[-1] in ".!?":
                sentences.append(t)
            covered |= phrases(t)
    if len(sentences) < SST2_HELDOUT:
        raise LightftError(f"sst2: only {len(sentences)} full sentences found, {SST2_HELDOUT} needed")
    held = random.Random(seed).sample(sorted(sentences), SST2_HELDOUT)
    held_set, banned = set(held), set().union(*(phrases(h) for h in held))
    label = {}
    for r in rows:
        label.setdefault(norm(r["text"]), r["label"])
    val = [r for r in rows if norm(r["text"]) in held_set]
    seen: set[str] = set()
    val = [r for r in val if not (norm(r["text"]) in seen or seen.add(norm(r["text"])))]
    train = [r for r in rows if norm(r["text"]) not in banned]
    facts = {"pooled_records": len(rows), "candidate_sentences": len(sentences), "validation": len(val),
             "train": len(train), "train_records_removed_as_phrases": len(rows) - len(train),
             "validation_words_mean": round(sum(len(norm(r["text"]).split()) for r in val) / len(val), 1),
             "validation_positive_share": round(sum(int(r["label"]) for r in val) / len(val), 3)}
    return {"train.jsonl": jsonl(train), "validation.jsonl": jsonl(val)}, facts


def carve_conll2003(data: Path, seed: int) -> Carved:
    train_p, val_p = source(data, "conll2003")
    train, val = conll_sentences(read_text(train_p)), conll_sentences(read_text(val_p))
    in_train = set(train)
    shared = [s for s in val if s in in_train]
    facts = {"rule": "valid.txt as given (eng.testa: other Reuters documents than train)",
             "train_sentences": len(train), "validation_sentences": len(val),
             "validation_sentences_also_in_train": len(shared),
             "of_which_over_6_tokens": sum(len(s.split()) > 6 for s in shared)}
    return {"train.txt": train_p.read_bytes(), "valid.txt": val_p.read_bytes()}, facts


def carve_squad(data: Path, seed: int) -> Carved:
    train_p, val_p = source(data, "squad")
    train, val = squad_rows(train_p), squad_rows(val_p)
    for key, get in (("titles", lambda r: r["title"]), ("contexts", lambda r: norm(r["context"])),
                     ("questions", lambda r: norm(r["qa"]["question"]))):
        both = {get(r) for r in train} & {get(r) for r in val}
        if both:
            raise LightftError(f"squad: train and validation share {len(both)} {key} (e.g. {sorted(both)[0][:60]!r}); "
                               "the shared files changed, carve whole articles instead")
    facts = {"rule": "validation.json as given: whole articles train lacks",
             "train_questions": len(train), "validation_questions": len(val),
             "train_articles": len({r["title"] for r in train}), "validation_articles": sorted({r["title"] for r in val})}
    return {"train.json": train_p.read_bytes(), "validation.json": val_p.read_bytes()}, facts


def carve_bioasq(data: Path, seed: int) -> Carved:
    paths = source(data, "bioasq")
    rows = [r for p in paths for r in squad_rows(p)]
    qid = lambda r: r["qa"]["id"].split("_")[0]  # noqa: E731  (ids are <question>_<snippet>)
    keys = [[("id", qid(r)), ("question", norm(r["qa"]["question"])), ("snippet", norm(r["context"]))] for r in rows]
    groups = groups_by_shared_keys(keys)
    questions = {qid(r) for r in rows}
    held = draw_groups(groups, lambda g: len({qid(rows[i]) for i in g}), round(BIOASQ_FRACTION * len(questions)), seed)
    train = [r for i, r in enumerate(rows) if i not in held]
    val = [r for i, r in enumerate(rows) if i in held]
    facts = {"questions": len(questions), "question_groups": len(groups),
             "validation_questions": len({qid(r) for r in val}), "validation_snippets": len(val),
             "train_questions": len({qid(r) for r in train}), "train_snippets": len(train)}
    version = json.loads(read_text(paths[0])).get("version", "BioASQ")
    return {"train.json": squad_json(train, version), "validation.json": squad_json(val, version)}, facts


def carve_medical_abstracts(data: Path, seed: int) -> Carved:
    (path,) = source(data, "medical_abstracts")
    docs = [line for line in read_text(path).splitlines() if line.strip()]
    held = set(random.Random(seed).sample(range(len(docs)), MEDICAL_HELDOUT))
    held_texts = {norm(docs[i]) for i in held}
    train = [d for i, d in enumerate(docs) if i not in held and norm(d) not in held_texts]
    val = [docs[i] for i in sorted(held)]
    text = lambda ds: "".join(d + "\n" for d in ds).encode("utf-8")  # noqa: E731
    facts = {"abstracts": len(docs), "validation_abstracts": len(val), "train_abstracts": len(train),
             "validation_words": sum(len(d.split()) for d in val)}
    return {"train.txt": text(train), "validation.txt": text(val)}, facts


def carve_capitals_qa(data: Path, seed: int) -> Carved:
    (path,) = source(data, "capitals_qa")
    items = [rec for _, rec in iter_jsonl(path)]
    for i, r in enumerate(items):
        if not isinstance(r.get("subject"), str):
            raise LightftError(f"{path}:{i + 1}: missing field 'subject' (the country the item is about)")
    countries = sorted({r["subject"] for r in items})
    held = set(random.Random(seed).sample(countries, CAPITALS_EVAL_COUNTRIES))
    val = [r for r in items if r["subject"] in held]
    pool = [r for r in items if r["subject"] not in held]
    count = lambda rs, rel: sum(r.get("relation") == rel for r in rs)  # noqa: E731
    facts = {"rule": "train.jsonl = demonstration pool, validation.jsonl = evaluation pool, disjoint by country",
             "countries": len(countries), "eval_countries": len(held), "eval_items": len(val),
             "eval_capital_items": count(val, "capital"), "eval_currency_items": count(val, "currency"),
             "demo_items": len(pool), "demo_capital_items": count(pool, "capital"),
             "demo_currency_items": count(pool, "currency")}
    return {"train.jsonl": jsonl(pool), "validation.jsonl": jsonl(val)}, facts


def carve_alpaca(data: Path, seed: int) -> Carved:
    train_p, val_p = source(data, "alpaca")
    train = [r for _, r in iter_json_list(train_p)]
    val = [r for _, r in iter_json_list(val_p)]
    pair = lambda r: (norm(r.get("instruction", "")), norm(r.get("input", "")))  # noqa: E731
    both = {pair(r) for r in train} & {pair(r) for r in val}
    if both:
        raise LightftError(f"alpaca: train and validation share {len(both)} (instruction, input) pairs; "
                           "the shared files changed")
    train_instructions, train_outputs = {norm(r["instruction"]) for r in train}, {norm(r["output"]) for r in train}
    facts = {"rule": "validation.json as given (disjoint from train on (instruction, input))",
             "train": len(train), "validation": len(val),
             "validation_instructions_also_in_train": sum(norm(r["instruction"]) in train_instructions for r in val),
             "validation_outputs_also_in_train": sum(norm(r["output"]) in train_outputs for r in val)}
    return {"train.json": train_p.read_bytes(), "validation.json": val_p.read_bytes()}, facts


CARVERS: dict[str, Callable[[Path, int], Carved]] = {
    "sst2": carve_sst2, "conll2003": carve_conll2003, "squad": carve_squad, "bioasq": carve_bioasq,
    "medical_abstracts": carve_medical_abstracts, "capitals_qa": carve_capitals_qa, "alpaca": carve_alpaca,
}


def carve(dataset: str, data: Path, out: Path, seed: int = 0) -> Path:
    """Carve one data set into out/dataset (replaced as a whole, atomically); returns that folder."""
    if dataset not in CARVERS:
        raise LightftError(f"unknown data set {dataset!r}; choose one of {', '.join(CARVERS)} or all")
    data, out = Path(data).resolve(), Path(out).resolve()
    if out == data or data in out.parents:
        raise LightftError(f"--out {out}: lies inside the data folder {data}; write the splits elsewhere")
    files, facts = CARVERS[dataset](data, seed)
    target = out / dataset
    if target.exists() and not (target / "manifest.json").is_file():
        raise LightftError(f"{target}: exists and is not a carved split (no manifest.json); choose another --out")
    manifest = {"dataset": dataset, "seed": seed, "files": sorted(files),
                "sources": {n: sha256(data / dataset / n) for n in SOURCES[dataset]},
                "made_by": "scripts/carve_splits.py", **facts}
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dataset}.", dir=out))
    tmp.chmod(0o755)  # mkdtemp makes it private; the splits are ordinary data
    try:
        for name, content in files.items():
            (tmp / name).write_bytes(content)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if target.exists():
            old = target.with_name(f".{dataset}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help=f"one of {', '.join(CARVERS)}, or all")
    parser.add_argument("--out", required=True, help="folder to write DATASET/ into (never inside --data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder (env LIGHTFT_DATA)")
    args = parser.parse_args(argv)
    try:
        for name in (list(CARVERS) if args.dataset == "all" else [args.dataset]):
            target = carve(name, Path(args.data), Path(args.out), args.seed)
            facts = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
            counts = {k: v for k, v in facts.items() if isinstance(v, int) and k != "seed"}
            print(f"{name}: {target} {json.dumps(counts)}", file=sys.stderr)
    except LightftError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""scripts/carve_splits.py: held-out items share nothing with train, the carving is deterministic, counts are sane.

The rules are checked on small data sets we write here (always run) and on ../shared/data (skipped
when it is missing; $LIGHTFT_DATA points elsewhere).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import SHARED_DATA
from lightft.errors import LightftError

spec = importlib.util.spec_from_file_location("carve_splits", Path(__file__).resolve().parents[1] / "scripts" /
                                              "carve_splits.py")
carve_splits = importlib.util.module_from_spec(spec)
spec.loader.exec_module(carve_splits)
norm, phrases = carve_splits.norm, carve_splits.phrases


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def squad_rows(path: Path) -> list[dict]:
    return carve_splits.squad_rows(path)


# ---- the checks, shared by the synthetic and the real data -------------------------------------------

def check_sst2(folder: Path) -> tuple[list[dict], list[dict]]:
    train, val = read_jsonl(folder / "train.jsonl"), read_jsonl(folder / "validation.jsonl")
    held = {norm(r["text"]) for r in val}
    assert len(held) == len(val)  # no sentence twice
    banned = set().union(*(phrases(h) for h in held))
    assert not [r for r in train if norm(r["text"]) in banned]  # no held-out sentence, nor any phrase of one
    assert all(h[-1] in ".!?" for h in held)
    return train, val


def check_bioasq(folder: Path) -> None:
    train, val = squad_rows(folder / "train.json"), squad_rows(folder / "validation.json")
    for get in (lambda r: r["qa"]["id"].split("_")[0], lambda r: norm(r["qa"]["question"]),
                lambda r: norm(r["context"])):
        assert not {get(r) for r in train} & {get(r) for r in val}
    for rows in (train, val):  # offsets still point at the answers
        assert all(r["context"][a["answer_start"]:].startswith(a["text"]) for r in rows for a in r["qa"]["answers"])


def check_disjoint_lines(folder: Path) -> None:
    train = {norm(x) for x in (folder / "train.txt").read_text(encoding="utf-8").splitlines()}
    val = [norm(x) for x in (folder / "validation.txt").read_text(encoding="utf-8").splitlines()]
    assert val and not train & set(val)


def check_capitals(folder: Path) -> tuple[list[dict], list[dict]]:
    pool, evaluation = read_jsonl(folder / "train.jsonl"), read_jsonl(folder / "validation.jsonl")
    assert not {r["subject"] for r in pool} & {r["subject"] for r in evaluation}
    assert not {r["question"] for r in pool} & {r["question"] for r in evaluation}
    return pool, evaluation


# ---- small data sets written here --------------------------------------------------------------------

def write_tiny_data(root: Path) -> Path:
    """Sentences with their phrases (as GLUE ships SST-2), a few countries, BioASQ-like snippets, abstracts."""
    words = ["bright", "dull", "warm", "cold", "quick", "slow", "loud", "quiet"]
    sentences = [f"the {a} film feels {b} and {c} ." for a in words for b in words[:3] for c in words[3:5]]
    rows = []
    for i, s in enumerate(sentences):
        toks = s.split()
        rows += [{"text": s, "label": i % 2}, {"text": " ".join(toks[1:4]), "label": i % 2},
                 {"text": toks[1], "label": 1}, {"text": " ".join(toks[4:7]), "label": 0}]
    (root / "sst2").mkdir(parents=True)
    (root / "sst2" / "train.jsonl").write_text(carve_splits.jsonl(rows[: len(rows) // 2]).decode(), encoding="utf-8")
    (root / "sst2" / "validation.jsonl").write_text(carve_splits.jsonl(rows[len(rows) // 2:]).decode(),
                                                    encoding="utf-8")
    (root / "capitals_qa").mkdir()
    items = []
    for c in range(12):
        items.append({"id": f"C{c}-capital", "relation": "capital", "subject": f"Land {c}",
                      "question": f"What is the capital of Land {c}?", "answer": f"Town {c}", "answers": [f"Town {c}"]})
        items.append({"id": f"C{c}-currency", "relation": "currency", "subject": f"Land {c}",
                      "question": f"What is the official currency of Land {c}?", "answer": f"Coin {c}",
                      "answers": [f"Coin {c}"]})
    (root / "capitals_qa" / "train.jsonl").write_text(carve_splits.jsonl(items).decode(), encoding="utf-8")
    (root / "bioasq").mkdir()
    paragraphs = []
    for q in range(20):  # question 3 reuses question 2's snippet and question 5 repeats question 4's text
        for s in range(3):
            snippet = f"Snippet {min(q, 2) if q in (2, 3) else q}-{s}: gene G{q} causes disease D{q}."
            text = f"Which gene causes disease D{4 if q == 5 else q}?"
            paragraphs.append({"context": snippet, "qas": [{"id": f"q{q:02d}_{s:03d}", "question": text,
                                                            "answers": [{"text": f"G{q}", "answer_start": snippet.index(f"G{q}")}]}]})
    for name, part in (("train.json", paragraphs[:45]), ("validation.json", paragraphs[45:])):
        (root / "bioasq" / name).write_text(json.dumps({"version": "t", "data": [{"title": "BioASQ", "paragraphs": part}]}),
                                            encoding="utf-8")
    (root / "medical_abstracts").mkdir()
    (root / "medical_abstracts" / "train.txt").write_text(
        "".join(f"Title {i}. Patients with condition {i} were treated.\n" for i in range(40)), encoding="utf-8")
    return root


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setattr(carve_splits, "SST2_HELDOUT", 6)
    monkeypatch.setattr(carve_splits, "CAPITALS_EVAL_COUNTRIES", 4)
    monkeypatch.setattr(carve_splits, "MEDICAL_HELDOUT", 5)
    return write_tiny_data(tmp_path / "data"), tmp_path / "splits"


def test_sst2_holds_out_whole_sentences_and_removes_their_phrases(tiny):
    data, out = tiny
    folder = carve_splits.carve("sst2", data, out, seed=3)
    train, val = check_sst2(folder)
    assert len(val) == 6
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["validation"] == 6 and manifest["train"] == len(train) and manifest["pooled_records"] == 192
    assert manifest["train_records_removed_as_phrases"] == 192 - len(train) > 6  # phrases went with the sentences
    assert [r for r in train if len(r["text"].split()) == 3]  # the other sentences' phrases stay


def test_other_tiny_carves_are_disjoint(tiny):
    data, out = tiny
    check_bioasq(carve_splits.carve("bioasq", data, out, seed=0))
    check_disjoint_lines(carve_splits.carve("medical_abstracts", data, out, seed=0))
    pool, evaluation = check_capitals(carve_splits.carve("capitals_qa", data, out, seed=0))
    assert len(evaluation) == 8 and len(pool) == 16


def test_bioasq_groups_join_shared_snippets_and_texts():
    keys = [[("id", "a"), ("s", 1)], [("id", "b"), ("s", 1)], [("id", "c"), ("q", "x")], [("id", "d"), ("q", "x")],
            [("id", "e"), ("s", 9)]]
    assert carve_splits.groups_by_shared_keys(keys) == [[0, 1], [2, 3], [4]]


def test_carving_is_deterministic_and_seeded(tiny):
    data, out = tiny
    for name in ("sst2", "bioasq", "medical_abstracts", "capitals_qa"):
        first = {p.name: p.read_bytes() for p in carve_splits.carve(name, data, out / "a", seed=1).iterdir()}
        again = {p.name: p.read_bytes() for p in carve_splits.carve(name, data, out / "b", seed=1).iterdir()}
        other = {p.name: p.read_bytes() for p in carve_splits.carve(name, data, out / "c", seed=2).iterdir()}
        assert first == again, name
        assert first != other, name


def test_refuses_bad_places_and_names(tiny, capsys):
    data, out = tiny
    with pytest.raises(LightftError, match="inside the data folder"):
        carve_splits.carve("sst2", data, data / "splits")
    (out / "sst2").mkdir(parents=True)
    (out / "sst2" / "mine.txt").write_text("keep me")
    with pytest.raises(LightftError, match="not a carved split"):
        carve_splits.carve("sst2", data, out)
    assert (out / "sst2" / "mine.txt").read_text() == "keep me"
    assert carve_splits.main(["nope", "--out", str(out), "--data", str(data)]) == 2
    assert capsys.readouterr().err.startswith("error: unknown data set 'nope'")
    assert carve_splits.main(["squad", "--out", str(out / "x"), "--data", str(data)]) == 2
    assert "squad/train.json: not found" in capsys.readouterr().err
    assert not (out / "x" / "squad").exists()


# ---- the shared data sets ----------------------------------------------------------------------------

needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} not found (set $LIGHTFT_DATA)")


@pytest.fixture(scope="module")
def carved(tmp_path_factory):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not found")
    out = tmp_path_factory.mktemp("splits")
    return {name: carve_splits.carve(name, SHARED_DATA, out, seed=0) for name in carve_splits.CARVERS}


@needs_shared
def test_shared_sst2(carved):
    train, val = check_sst2(carved["sst2"])
    assert len(val) == 1000 and 15000 < len(train) < 20000
    assert 12 < sum(len(r["text"].split()) for r in val) / len(val) < 25  # full sentences, not phrases
    assert 0.4 < sum(r["label"] for r in val) / len(val) < 0.65


@needs_shared
def test_shared_qa_medical_capitals_alpaca(carved):
    check_bioasq(carved["bioasq"])
    assert 45 <= json.loads((carved["bioasq"] / "manifest.json").read_text())["validation_questions"] <= 60
    squad_train, squad_val = squad_rows(carved["squad"] / "train.json"), squad_rows(carved["squad"] / "validation.json")
    assert not {r["title"] for r in squad_train} & {r["title"] for r in squad_val}
    assert len(squad_train) == 3807 and len(squad_val) == 563
    check_disjoint_lines(carved["medical_abstracts"])
    assert len((carved["medical_abstracts"] / "validation.txt").read_text().splitlines()) == 250
    pool, evaluation = check_capitals(carved["capitals_qa"])
    assert len({r["subject"] for r in evaluation}) == 50 and len(pool) + len(evaluation) == 288
    assert {r["relation"] for r in pool} == {r["relation"] for r in evaluation} == {"capital", "currency"}
    alpaca = json.loads((carved["alpaca"] / "manifest.json").read_text())
    assert alpaca["train"] == 4500 and alpaca["validation"] == 500


@needs_shared
def test_shared_conll_is_valid_txt_as_given(carved):
    assert (carved["conll2003"] / "valid.txt").read_bytes() == (SHARED_DATA / "conll2003" / "valid.txt").read_bytes()
    manifest = json.loads((carved["conll2003"] / "manifest.json").read_text())
    assert manifest["validation_sentences"] == 3250 and manifest["validation_sentences_also_in_train"] < 250


@needs_shared
def test_shared_carving_is_deterministic(carved, tmp_path):
    for name in ("sst2", "bioasq", "capitals_qa"):
        again = carve_splits.carve(name, SHARED_DATA, tmp_path, seed=0)
        assert all((again / f).read_bytes() == (carved[name] / f).read_bytes() for f in ("manifest.json",
                   *json.loads((again / "manifest.json").read_text())["files"]))

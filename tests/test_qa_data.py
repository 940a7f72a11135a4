"""QA data: windows with stride over long contexts, answer spans through offsets, bad SQuAD input."""

from __future__ import annotations

import json

import pytest

from conftest import minilm_dir
from lightft.data.qa import QADataModule, window_starts
from lightft.errors import LightftError
from lightft.options import Options
from lightft.tokenizer import load_tokenizer

WORDS = "apple river stone cloud green house music paper light table".split()


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(minilm_dir())


def squad_file(path, paragraphs):
    """paragraphs: [(context, [(id, question, [(text, start)])])] -> a SQuAD v1.1 file."""
    data = {"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": ctx, "qas": [{"id": qid, "question": q, "answers": [{"text": t, "answer_start": s} for t, s in answers]}
                                 for qid, q, answers in qas]} for ctx, qas in paragraphs]}]}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return str(path)


def build(tokenizer, path, split="train", **opts):
    dm = QADataModule(tokenizer, Options(cache=False, **opts))
    return dm.build_examples(path, split)[0]


def answer_text(ex):
    """The context text a window's gold start/end tokens point at (None for the no-answer position)."""
    if ex["start_position"] == 0:
        return None
    s, e = ex["start_position"] - ex["ctx_offset"], ex["end_position"] - ex["ctx_offset"]
    return ex["context"][ex["char_starts"][s]:ex["char_ends"][e]]


def test_window_starts_overlap_by_stride_and_cover_everything():
    assert window_starts(10, 10, 3) == [0]
    assert window_starts(11, 10, 3) == [0, 7]
    starts = window_starts(100, 20, 5)
    assert all(b - a == 15 for a, b in zip(starts, starts[1:])) and starts[-1] + 20 >= 100


def test_every_answer_position_including_window_edges(tmp_path, tokenizer):
    """An answer at each token of a long context: windows holding it point at it, the others at [CLS]."""
    words = [WORDS[i % len(WORDS)] for i in range(60)]
    context = " ".join(words)
    assert len(tokenizer.encode(context, add_special_tokens=False)) == 60  # one token per word
    qas, pos = [], 0
    for i, w in enumerate(words):
        qas.append((f"q{i}", "which word?", [(w, pos)]))
        pos += len(w) + 1
    examples = build(tokenizer, squad_file(tmp_path / "d.json", [(context, qas)]), max_length=24, doc_stride=6)
    by_q: dict = {}
    for ex in examples:
        assert len(ex["input_ids"]) <= 24
        by_q.setdefault(ex["example_id"], []).append(ex)
    for i, w in enumerate(words):
        wins = by_q[f"q{i}"]
        assert [e["window"] for e in wins] == list(range(wins[0]["n_windows"]))
        holding = [answer_text(e) for e in wins if answer_text(e) is not None]
        assert holding and set(holding) == {w}, i  # never dropped, always the right text
        # the windows that hold the answer are exactly those whose token range covers token i
        covering = [e for e in wins if e["char_starts"][0] <= qas[i][2][0][1] < e["char_ends"][-1]]
        assert len(holding) == len(covering)
    # consecutive windows share doc_stride tokens; together they cover every context token
    wins = by_q["q0"]
    for a, b in zip(wins, wins[1:]):
        assert a["char_starts"][-6:] == b["char_starts"][:6]
    every_token = [s for s, _ in tokenizer.encode_with_offsets(context, add_special_tokens=False).offsets]
    assert sorted({s for e in wins for s in e["char_starts"]}) == every_token
    assert wins[-1]["char_ends"][-1] == len(context)


def test_answer_straddling_a_window_boundary_is_labelled_only_where_whole(tmp_path, tokenizer):
    words = [WORDS[i % len(WORDS)] for i in range(40)]
    context = " ".join(words)
    start_word = 15  # with room 24 - 3 - 2 = 19 tokens a window ends at token 19: the answer crosses it
    answer = " ".join(words[start_word:start_word + 6])
    start = context.index(answer, sum(len(w) + 1 for w in words[:start_word]))
    examples = build(tokenizer, squad_file(tmp_path / "d.json", [(context, [("x", "q?", [(answer, start)])])]),
                     max_length=24, doc_stride=8)
    assert examples[0]["start_position"] == 0  # first window holds only part of it
    assert [answer_text(e) for e in examples if answer_text(e)] == [answer]


def test_unicode_and_whitespace_heavy_context(tmp_path, tokenizer):
    context = "  Café   au lait\n\n\t naïve  résumé —  東京 is   big 🙂 and  Zürich   too.  "
    qas = [(f"u{i}", "where?", [(t, context.index(t))]) for i, t in enumerate(["東京", "résumé", "Zürich", "naïve  résumé"])]
    examples = build(tokenizer, squad_file(tmp_path / "u.json", [(context, qas)]), max_length=64, doc_stride=16)
    assert [answer_text(e) for e in examples] == ["東京", "résumé", "Zürich", "naïve  résumé"]


def test_question_without_answer_in_eval_split_and_gold_answers_kept(tmp_path, tokenizer):
    path = tmp_path / "e.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "a b c", "qas": [
        {"id": "n1", "question": "q?"},
        {"id": "n2", "question": "q?", "answers": [{"text": "b", "answer_start": 2}, {"text": "b c", "answer_start": 2}]},
    ]}]}]}), encoding="utf-8")
    examples = build(tokenizer, str(path), split="eval", doc_stride=16)
    assert [json.loads(e["answers"]) for e in examples] == [[], ["b", "b c"]]
    with pytest.raises(LightftError, match="question n1: missing field 'answers'"):
        build(tokenizer, str(path), split="train", doc_stride=16)


@pytest.mark.parametrize("qa,context,match", [
    ({"id": "bad1", "question": "q?", "answers": [{"text": "cat", "answer_start": 3}]}, "the cat sat",
     r"question bad1: answer_start 3 does not match the answer text 'cat'"),
    ({"id": "bad2", "answers": [{"text": "cat", "answer_start": 4}]}, "the cat sat", "question bad2: missing or empty field 'question'"),
    ({"id": "bad3", "question": "q?", "answers": [{"text": "x", "answer_start": 0}]}, "   ", "question bad3: empty context"),
    ({"id": "bad4", "question": "q?", "answers": [{"text": "cat"}]}, "the cat sat", "question bad4: each answer needs"),
    ({"question": "q?", "answers": []}, "the cat sat", r"qas\[0\]: missing field 'id'"),
])
def test_bad_input_names_the_question(tmp_path, tokenizer, qa, context, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": context, "qas": [qa]}]}]}), encoding="utf-8")
    with pytest.raises(LightftError, match=match):
        build(tokenizer, str(path), doc_stride=16)


def test_missing_context_and_bad_layout(tmp_path, tokenizer):
    path = tmp_path / "nc.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"qas": [{"id": "c1", "question": "q?", "answers": []}]}]}]}))
    with pytest.raises(LightftError, match="question c1: missing field 'context'"):
        build(tokenizer, str(path), doc_stride=16)
    path.write_text(json.dumps([{"context": "x"}]))
    with pytest.raises(LightftError, match="expected SQuAD JSON"):
        build(tokenizer, str(path), doc_stride=16)


def test_stride_must_leave_room(tmp_path, tokenizer):
    path = squad_file(tmp_path / "s.json", [("the cat sat", [("s1", "what sat on the mat today?", [("cat", 4)])])])
    with pytest.raises(LightftError, match="not more than --doc-stride"):
        build(tokenizer, path, max_length=16, doc_stride=8)


def test_limit_val_never_keeps_part_of_a_question(tmp_path, tokenizer):
    words = [WORDS[i % len(WORDS)] for i in range(60)]
    context = " ".join(words)
    path = squad_file(tmp_path / "v.json", [(context, [("a", "q?", [("apple", 0)]), ("b", "q?", [("river", 6)])])])
    probe = QADataModule(tokenizer, Options(cache=False, max_length=24, doc_stride=6), val_file=path)
    probe.setup("validate")
    n = probe.datasets["val"][0]["n_windows"]
    assert n > 1 and len(probe.datasets["val"]) == 2 * n
    dm2 = QADataModule(tokenizer, Options(cache=False, max_length=24, doc_stride=6, limit_val=n + 2), val_file=path)
    dm2.setup("validate")
    assert [e["example_id"] for e in dm2.datasets["val"]] == ["a"] * n


def test_held_out_validation_takes_whole_questions(tmp_path, tokenizer):
    words = [WORDS[i % len(WORDS)] for i in range(60)]
    context = " ".join(words)
    qas = [(f"q{i // 3}_{i % 3:03d}", "which?", [(words[i], sum(len(w) + 1 for w in words[:i]))]) for i in range(30)]
    path = squad_file(tmp_path / "t.json", [(context, qas)])
    dm = QADataModule(tokenizer, Options(cache=False, max_length=24, doc_stride=6, val_fraction=0.3), train_file=path)
    dm.setup("fit")
    train_q = {e["example_id"].split("_")[0] for e in dm.datasets["train"]}
    val_q = {e["example_id"].split("_")[0] for e in dm.datasets["val"]}
    assert len(val_q) == 3 and not train_q & val_q  # BioASQ-style snippets of one question stay together
    assert len(dm.datasets["val"]) == sum(e["n_windows"] for e in dm.datasets["val"] if e["window"] == 0)

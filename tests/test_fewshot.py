"""lightft fewshot options: demonstration selection, templates, contextual calibration, --predictions-out."""

from __future__ import annotations

import json
import random

import pytest
import torch

from lightft import LightftError
from lightft import fewshot
from lightft.fewshot import QAItem, build_prompt, choose_demos, resolve_template
from supervised_utils import run_cli, write_lines
from tiny_decoder import tiny_decoder

POOL = [QAItem(f"What is the capital of L{i}?", [f"T{i}"], i, "capital") for i in range(6)] + \
       [QAItem(f"What is the currency of L{i}?", [f"C{i}"], 6 + i, "currency") for i in range(6)]


def test_relation_selection_keeps_to_the_items_relation():
    item = QAItem("What is the currency of Z?", ["Zed"], 99, "currency")
    for seed in range(5):
        demos = choose_demos(POOL, 5, item, random.Random(seed), "relation")
        assert len(demos) == 5 and {d.relation for d in demos} == {"currency"}
    assert choose_demos(POOL, 5, item, random.Random(0), "relation") != \
        choose_demos(POOL, 5, item, random.Random(1), "relation")
    with pytest.raises(LightftError, match="only 6 items of relation 'currency'"):
        choose_demos(POOL, 7, item, random.Random(0), "relation")


def test_nearest_selection_puts_the_closest_last_and_skips_the_item():
    item = POOL[3]
    ranked = [3, 7, 2, 9, 0, 1, 4, 5, 6, 8, 10, 11]  # closest first; the item itself (3) must be skipped
    demos = choose_demos(POOL, 3, item, random.Random(0), "nearest", ranked)
    assert demos[-1] is POOL[7] and {id(d) for d in demos} == {id(POOL[7]), id(POOL[2]), id(POOL[9])}
    assert choose_demos(POOL, 0, item, random.Random(0), "nearest", ranked) == []


def test_templates():
    terse = resolve_template("terse")
    assert build_prompt(terse, POOL[:1], POOL[1]) == ("Q: What is the capital of L0?\nA: The answer is T0\n\n"
                                                      "Q: What is the capital of L1?\nA: The answer is")
    assert resolve_template("Question: {question} -> {answer}") == "Question: {question} -> {answer}"
    with pytest.raises(LightftError, match="qa, terse"):
        resolve_template("chatty")


def test_calibration_picks_the_first_token_the_prompt_raises_most(tmp_path, monkeypatch):
    """p(A) 0.6 vs p(B) 0.4 with the question, 0.9 vs 0.1 without it: calibration answers B, greedy A."""
    model = tiny_decoder(tmp_path, "llama")
    lm, tok, _ = fewshot.load_for_generation(str(model), chat=False)
    a, b = tok.encode("A", add_special_tokens=False)[0], tok.encode("B", add_special_tokens=False)[0]

    def fake(model, ids):
        logp = torch.full((lm.cfg.vocab_size,), -30.0)
        content_free = tok.decode(ids).endswith("N/A\nA:")
        logp[a], logp[b] = (torch.tensor([0.9, 0.1]) if content_free else torch.tensor([0.6, 0.4])).log()
        return logp

    monkeypatch.setattr(fewshot, "first_token_logprobs", fake)
    texts = fewshot.calibrated_generate(lm, tok, ["Q: x\nA:"], ["Q: N/A\nA:"],
                                        fewshot.SamplingOptions(max_new_tokens=2, stop=("\n",)), batch_size=4)
    assert texts[0].startswith("B")


@pytest.fixture
def relation_items(tmp_path):
    """A tiny llama, 4 capital + 4 currency questions with their relation, and where predictions go."""
    rows = [{"question": f"What is the {r} of L{i}?", "answer": f"{r[0]}{i}", "relation": r}
            for r in ("capital", "currency") for i in range(4)]
    return tiny_decoder(tmp_path, "llama"), write_lines(tmp_path / "qa.jsonl", rows), tmp_path / "preds.jsonl"


def test_cli_select_calibrate_and_predictions_out(tmp_path, capsys, relation_items):
    model, data, preds = relation_items
    code, out, err = run_cli(["fewshot", "--model", model, "--data", data, "--shots", "0,2", "--seeds", "2",
                              "--select", "relation", "--template", "terse", "--calibrate", "--max-new-tokens", "3",
                              "--predictions-out", preds], capsys)
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["calibrate"] and report["select"] == "relation"
    assert set(report["results"][1]["by_relation"]) == {"capital", "currency"}
    lines = [json.loads(x) for x in preds.read_text().splitlines()]
    assert len(lines) == 8 + 2 * 8  # 0-shot once, 2-shot for two seeds
    first = lines[-1]
    assert {"shots", "seed", "prompt", "output", "prediction", "correct", "answers"} <= set(first)
    assert first["prompt"].count("The answer is") == 3 and first["prompt"].endswith("The answer is")
    assert "[fewshot] 2-shot seed 1" in err and " -> " in err  # a few answers shown
    code, _, err = run_cli(["fewshot", "--model", model, "--data", write_lines(tmp_path / "plain.jsonl", [
        {"question": "q", "answer": "a"}] * 3), "--select", "relation", "--shots", "1"], capsys)
    assert code == 2 and "has no 'relation' field" in err


def whole_sequence_logprob(lm, prompt: list[int], option: list[int]) -> float:
    """The reference: prompt and option as one sequence, no cache."""
    ids = torch.tensor([prompt + option])
    logp = lm.lm_head(lm(ids, return_logits=False).hidden_states[0]).float().log_softmax(-1)  # (T, V)
    return float(sum(logp[len(prompt) - 1 + t, tok] for t, tok in enumerate(option)))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_option_logprobs_with_the_shared_cache_equal_whole_sequences(tmp_path, family, monkeypatch):
    model = tiny_decoder(tmp_path, family)
    lm, tok, _ = fewshot.load_for_generation(str(model), chat=False, kernels="off")
    prompt = tok.encode("Q: What is the capital of L3?\nA: The answer is", add_special_tokens=False)
    options = [tok.encode(t, add_special_tokens=False) for t in (" T3\n", " Tee three\n", " C\n", " a much longer one\n")]
    monkeypatch.setattr(fewshot, "OPTION_BATCH", 3)  # two batches, the second of one option
    with torch.inference_mode():
        got = fewshot.option_logprobs(lm, prompt, options)
        want = torch.tensor([whole_sequence_logprob(lm, prompt, o) for o in options])
    assert got.shape == (4,)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_choose_takes_the_likeliest_option_of_the_items_relation(tmp_path, monkeypatch):
    items = [QAItem("What is the capital of L1?", ["T1"], 1, "capital"),
             QAItem("What is the currency of L1?", ["C1", "CUR"], 2, "currency")]
    options = fewshot.option_sets(items, POOL)
    assert options["capital"] == [f"T{i}" for i in range(6)] and options["currency"] == [f"C{i}" for i in range(6)]
    seen = []

    def fake(model, prompt_ids, tails):  # favours the option whose tail decodes to " T4\n" / " C1\n"
        texts = [bytes(t).decode() for t in tails]
        seen.append(texts)
        return torch.tensor([1.0 if t in (" T4\n", " C1\n") else 0.0 for t in texts])

    class ByteTokenizer:
        bos_token = None

        def encode(self, text, add_special_tokens=True):
            return list(text.encode())

    monkeypatch.setattr(fewshot, "option_logprobs", fake)
    template = resolve_template("terse")
    prompts = [build_prompt(template, [], it) for it in items]
    assert fewshot.choose(None, ByteTokenizer(), template, items, prompts, options) == ["T4", "C1"]
    assert seen[0] == [f" T{i}\n" for i in range(6)]  # the answer after the cue's space, ended by the newline


def test_cli_answers_choose(capsys, relation_items):
    model, data, preds = relation_items
    code, out, err = run_cli(["fewshot", "--model", model, "--data", data, "--shots", "0,2", "--seeds", "2",
                              "--select", "relation", "--answers", "choose", "--calibrate",
                              "--predictions-out", preds], capsys)
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["answers"] == "choose" and report["options"] == {"capital": 4, "currency": 4}
    lines = [json.loads(x) for x in preds.read_text().splitlines()]
    assert len(lines) == 8 + 2 * 8
    for r in lines:  # every answer is one of the item's relation's options
        assert r["prediction"] in {f"{r['relation'][0]}{i}" for i in range(4)}
    code, _, err = run_cli(["fewshot", "--model", model, "--data", data, "--answers", "vote"], capsys)
    assert code == 2 and "--answers" in err

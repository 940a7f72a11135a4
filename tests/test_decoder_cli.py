"""End to end on tiny decoders: train lm / instruct, eval, generate from base and run folders, fewshot."""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner

from lightft import LightftError
from lightft.cli.main import cli, main
from lightft.fewshot import QAItem, build_prompt, choose_demos, read_items
from lightft.tasks.qa_metrics import exact_match, normalize_answer as normalize
from tiny_decoder import SIMPLE_CHAT, tiny_decoder

FAST = ["--max-steps", "2", "--batch-size", "4", "--no-progress", "--no-cache", "--lr", "1e-3",
        "--max-length", "64"]


def _run(args):
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_lm_and_instruct_runs_then_generate(tmp_path):
    model = tiny_decoder(tmp_path, "llama", chat_template=SIMPLE_CHAT)
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(f"Document {i} talks about fever and aspirin." for i in range(20)), encoding="utf-8")
    out = _run(["train", "lm", "--model", str(model), "--train", str(text), "--doc-per-line",
                "--out", str(tmp_path / "lm"), "--full", *FAST])
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics["val_perplexity"] > 1 and metrics["steps"] == 2
    evaluated = json.loads(_run(["eval", "lm", "--model", str(tmp_path / "lm"), "--data", str(text),
                                 "--no-progress"]).strip().splitlines()[-1])
    assert "perplexity" in evaluated and "token_loss" in evaluated

    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": f"Say {w}", "input": "", "output": w} for w in ["yes", "no"] * 6]))
    _run(["train", "instruct", "--model", str(model), "--train", str(alpaca), "--out", str(tmp_path / "it"),
          "--packing", "--lora-targets", "all-linear", *FAST])  # LoRA: generate merges it
    run_info = json.loads((tmp_path / "it" / "run.json").read_text())
    assert run_info["task_state"]["template"] == "chat"
    for source in (model, tmp_path / "it"):
        lines = _run(["generate", "--model", str(source), "--prompt", "Say yes", "--prompt", "Hi",
                      "--max-new-tokens", "5", "--jsonl"]).strip().splitlines()
        assert len(lines) == 2 and all(json.loads(line)["finish_reason"] in ("eos", "length") for line in lines)


def test_fewshot_cli(tmp_path):
    model = tiny_decoder(tmp_path, "gpt2")
    data = tmp_path / "qa.jsonl"
    rows = [{"question": f"Capital {i}?", "answer": f"City {i}", "answers": [f"City {i}", f"C{i}"]} for i in range(6)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = _run(["fewshot", "--model", str(model), "--data", str(data), "--shots", "0,2", "--seeds", "2",
                "--max-new-tokens", "3"])
    report = json.loads(out.strip().splitlines()[-1])
    assert [r["shots"] for r in report["results"]] == [0, 2]
    assert len(report["results"][1]["per_seed"]) == 2 and report["items"] == 6


def test_fewshot_pieces(tmp_path):
    assert normalize("  The  Washington, D.C.! ") == "washington dc"
    assert exact_match("the euro", ["Euro", "EUR"]) and exact_match("eur", ["Euro", "EUR"])
    assert not exact_match("Paris, France", ["Paris"])
    pool = [QAItem(f"q{i}", [f"a{i}"], i) for i in range(5)]
    demos = choose_demos(pool, 4, pool[2], random.Random(0))
    assert pool[2] not in demos and len(demos) == 4
    assert build_prompt("Q: {question}\nA: {answer}", pool[:1], pool[1]) == "Q: q0\nA: a0\n\nQ: q1\nA:"
    with pytest.raises(LightftError, match="pool has only 4"):
        choose_demos(pool, 5, pool[0], random.Random(0))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n', encoding="utf-8")
    with pytest.raises(LightftError, match=r"bad.jsonl:1: missing field 'answer'"):
        read_items(str(bad))
    labelled = tmp_path / "tl.jsonl"
    labelled.write_text('{"text": "2+2", "label": 4}\n', encoding="utf-8")
    assert read_items(str(labelled))[0].answers == ["4"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    model = tiny_decoder(tmp_path, "gpt2")
    capsys.readouterr()
    for argv in (["generate", "--model", str(model)],
                 ["generate", "--model", str(model), "--prompt", "x", "--chat"],
                 ["fewshot", "--model", str(model), "--data", str(tmp_path / "missing.jsonl")],
                 ["fewshot", "--model", str(model), "--data", str(tmp_path / "x.jsonl"), "--shots", "a"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err


def test_short_instruct_run_learns_to_stop_at_eos(tmp_path):
    """Responses end with EOS in the labels, so after a short run generation ends on EOS, not the length cap."""
    model = tiny_decoder(tmp_path, "llama")
    data = tmp_path / "yes.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Say yes {i}", "output": "yes"}) + "\n" for i in range(16)))
    _run(["train", "instruct", "--model", str(model), "--train", str(data), "--out", str(tmp_path / "run"),
          "--full", "--max-steps", "30", "--batch-size", "8", "--lr", "3e-3", "--warmup", "0", "--no-progress",
          "--no-cache", "--val-fraction", "0.125"])
    before, after = (json.loads(_run(["generate", "--model", str(m), "--prompt", "Say yes 3", "--max-new-tokens", "12",
                                      "--jsonl"]).strip().splitlines()[-1]) for m in (model, tmp_path / "run"))
    assert before["finish_reason"] == "length"
    assert after["finish_reason"] == "eos" and after["text"] and "yes".startswith(after["text"])


def test_scripts_parse():
    import subprocess
    from pathlib import Path

    for script in sorted((Path(__file__).resolve().parents[1] / "scripts" / "decoder").glob("*.sh")):
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_generate_cli_bf16_packed_and_lookahead(tmp_path):
    """--dtype bfloat16 takes the packed-weight path; --lookahead 0 and 4 give the same text; a bad value is one line."""
    model = tiny_decoder(tmp_path, "llama")
    texts = []
    for lookahead in ("0", "4"):
        line = _run(["generate", "--model", str(model), "--prompt", "abcabcabc", "--max-new-tokens", "12",
                     "--dtype", "bfloat16", "--lookahead", lookahead, "--no-chat", "--jsonl"]).strip()
        texts.append(json.loads(line)["text"])
    assert texts[0] == texts[1]
    result = CliRunner().invoke(cli, ["generate", "--model", str(model), "--prompt", "a", "--lookahead", "-1"])
    assert isinstance(result.exception, LightftError) and "--lookahead" in str(result.exception)  # main() prints it


def test_one_prompt_streams_the_same_text_and_reports_tokens_per_second(tmp_path):
    model = tiny_decoder(tmp_path, "llama")
    args = ["generate", "--model", str(model), "--prompt", "Hello there", "--max-new-tokens", "12", "--no-chat"]
    whole = json.loads(_run([*args, "--jsonl"]).strip())
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0 and res.stdout == whole["text"] + "\n"
    assert f"[generate] {whole['new_tokens']} new tokens in " in res.stderr and "tokens/s)" in res.stderr


def test_stream_holds_back_a_possible_stop_string_and_half_characters(capsys):
    from lightft.cli.generate import Stream

    pieces = {1: b"Hel", 2: b"lo ", 3: b"EN", 4: b"D!", 5: b"\xc3", 6: b"\xa9"}  # 5 + 6: the two bytes of "é"
    stream = Stream(lambda ids: b"".join(pieces[i] for i in ids).decode("utf-8", errors="replace"), stop=("END",))
    shown = []
    for t in (1, 2, 5, 6, 3, 4):
        stream.token(0, t)
        shown.append(capsys.readouterr().out)
    # half a character is held until it is whole; "EN" might start "END", which then arrives and is never shown
    assert shown == ["Hel", "lo ", "", "é", "", ""]
    stream.finish("Hello é")  # the final text, cut before the stop string
    assert capsys.readouterr().out == "\n"

"""Follow-ups of issue 15 (a newcomer's first hour): an instruct export generates with its run's template,
an --adapter export is refused with the fix, --init from an older decoder classify run (a head with a
bias) loads, and a pooler the checkpoint lacks is the same on every load."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from lightft.cli.main import cli, main
from tests.tiny_run import make_tiny_model, write_classify_jsonl
from tiny_decoder import tiny_decoder

FAST = ["--max-steps", "2", "--batch-size", "4", "--no-progress", "--no-cache", "--lr", "1e-3", "--max-length", "64"]


def _run(args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _last_error(args, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_generate_from_an_instruct_export_uses_the_runs_template(tmp_path):
    """A model without a chat template: the instruct run trains with its own prompt template (as with
    Alpaca's, the default there); its merged export holds no template of its own, so generate reads the
    run's from lightft_task.json."""
    from lightft.generate import load_for_generation, render_prompt

    model = tiny_decoder(tmp_path, "llama")
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps([{"instruction": f"Say {w}", "input": "", "output": w} for w in ["yes", "no"] * 6]))
    run, export = tmp_path / "it", tmp_path / "export"
    template = "Q: {instruction}\nA: "  # Alpaca's header would not fit the tiny model's 128 positions
    _run(["train", "instruct", "--model", model, "--train", data, "--out", run, "--lora-targets", "q,v",
          "--template", template, *FAST])
    assert json.loads((run / "run.json").read_text())["task_state"]["template"] == template
    _run(["export", run, "--out", export])
    loaded = {src: load_for_generation(str(src)) for src in (run, export, model)}
    assert loaded[run][2] == loaded[export][2] == template and loaded[model][2] is None
    assert render_prompt(loaded[export][1], "Say yes", loaded[export][2]) == \
        render_prompt(loaded[run][1], "Say yes", loaded[run][2]) != "Say yes"
    assert load_for_generation(str(export), chat=False)[2] is None  # --no-chat still sends raw text
    out = [json.loads(_run(["generate", "--model", m, "--prompt", "Say yes", "--max-new-tokens", "4",
                            "--jsonl"]).stdout.strip().splitlines()[-1]) for m in (run, export)]
    assert out[0]["text"] == out[1]["text"]


def test_an_adapter_export_is_refused_naming_the_run_and_merged(tmp_path, capsys):
    """eval / predict / generate of an --adapter export (no config.json, no base weights) stop with one
    line naming the run it came from and --merged, not 'missing config.json'."""
    from lightft.cli.export import export_run

    model = make_tiny_model(tmp_path / "model")
    data = write_classify_jsonl(tmp_path / "train.jsonl", 24)
    run = tmp_path / "run"
    _run(["train", "classify", "--model", model, "--train", data, "--out", run, "--lora-targets", "q,v", *FAST])
    adapter = export_run(str(run), str(tmp_path / "adapter"), adapter=True, dtype=None, force=False, say=str)
    for args in (["eval", "classify", "--data", data], ["predict", "classify", "--data", data],
                 ["eval", "lm", "--data", data], ["generate", "--prompt", "x"], ["inspect"]):
        line = _last_error([*args, "--model", adapter] if args != ["inspect"] else ["inspect", adapter], capsys)
        assert "a LoRA adapter" in line and str(run.resolve()) in line and "--merged" in line, (args, line)
        assert "missing config.json" not in line


def test_init_from_a_decoder_classify_run_whose_head_has_a_bias(tmp_path, capsys):
    """Runs made before decoder classify heads lost their bias hold head.out.bias and no head_bias in
    run.json. They still load; --init from one loads its head's weight, leaves the bias out with a
    line, and the new run (whose head has no bias) evaluates."""
    from safetensors.torch import load_file, save_file

    from lightft.evaluate import run_module

    model = tiny_decoder(tmp_path, "gpt2")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": t.split()[0]}) + "\n"
                            for t in ["yes it is", "no it is not", "yes indeed", "no never"] * 6))
    old = tmp_path / "old"
    _run(["train", "classify", "--model", model, "--train", data, "--out", old, "--lora-targets", "q,v", *FAST])
    weights = load_file(str(old / "weights.safetensors"))  # make it an old run: a bias, no head_bias
    assert "head.out.bias" not in weights
    torch.manual_seed(0)
    weights["head.out.bias"] = torch.randn(2)
    save_file(weights, str(old / "weights.safetensors"))
    info = json.loads((old / "run.json").read_text())
    del info["task_state"]["head_bias"]
    (old / "run.json").write_text(json.dumps(info))
    torch.testing.assert_close(run_module(str(old)).head.out.bias, weights["head.out.bias"])  # loads as it was

    new = tmp_path / "new"
    capsys.readouterr()
    result = _run(["train", "classify", "--model", model, "--init", old, "--train", data, "--out", new,
                   "--lora-targets", "q,v", *FAST])
    assert "left out head tensors this run's head has no place for: head.out.bias" in result.stderr
    module = run_module(str(new))
    assert module.head.out.bias is None and module.task_state()["head_bias"] is False
    metrics = json.loads(_run(["eval", "classify", "--model", new, "--data", data, "--no-progress"]
                              ).stdout.strip().splitlines()[-1])
    assert 0 <= metrics["accuracy"] <= 1


def test_a_pooler_missing_from_the_checkpoint_is_the_same_on_every_load(tmp_path):
    """BERT checkpoints without pooler tensors (e.g. from BertForMaskedLM) get a pooler drawn from a fixed
    seed, not from torch's global random state: two loads, and a LoRA run's training and its eval, agree."""
    from safetensors.torch import load_file, save_file

    from lightft.checkpoint import load_model

    folder = make_tiny_model(tmp_path / "model")
    weights = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if "pooler" not in k}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    poolers = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = load_model(folder)
        assert sorted(model.source.report.initialised) == ["pooler.bias", "pooler.weight"]
        poolers.append(model.pooler.weight.detach().clone())
    torch.testing.assert_close(poolers[0], poolers[1], rtol=0, atol=0)
    assert 0.01 < float(poolers[0].std()) < 0.03
    torch.manual_seed(5)
    again = torch.rand(3)
    torch.manual_seed(5)
    load_model(folder)
    torch.testing.assert_close(torch.rand(3), again)  # loading leaves the global random state alone


def test_a_missing_field_names_the_format_the_reader_expects(tmp_path):
    """`--text-column` is the fix for classify data only; NER, instruct and fewshot files name their format."""
    from lightft import LightftError
    from lightft.data.instruct import record_messages
    from lightft.data.ner import read_sentences
    from lightft.fewshot import read_items

    data = tmp_path / "sentences.jsonl"
    data.write_text(json.dumps({"text": "Peter lives in Brussels."}) + "\n", encoding="utf-8")
    with pytest.raises(LightftError) as e:
        read_sentences(str(data), None)
    assert "missing field 'tokens'" in str(e.value) and '{"tokens": [' in str(e.value)
    assert "--text-column" not in str(e.value)
    with pytest.raises(LightftError) as e:
        read_items(str(data))
    assert "missing field 'label'" in str(e.value) and '{"question", "answer"' in str(e.value)
    assert "--text-column" not in str(e.value)
    with pytest.raises(LightftError) as e:
        record_messages(str(data), 1, {"text": "x"})
    assert "missing field 'instruction'" in str(e.value) and '{"messages": [...]}' in str(e.value)

"""Bad input never gives a traceback or partial output: for every command, data format and option clash in
tests/bad_inputs/ (and a few generated cases), lightft prints one `error:` line, exits non-zero, and leaves
no run folder / metrics / predictions behind. The README's "Faults and bad input" table lists these."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from tests.bad_cases import build_env, check_case, train_with


class Evil:
    def __reduce__(self):  # what a malicious pickle runs on load
        return (os.system, ("echo pwned > pwned.txt",))


def damaged_copies(d: Path, env: dict[str, str]) -> None:
    """Damaged copies of the model and run folders, a folder of someone's files, a huge line."""
    model = Path(env["model"])
    pickled = d / "pickled_model"
    shutil.copytree(model, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    truncated = d / "truncated_model"
    shutil.copytree(model, truncated)
    blob = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    badcfg = d / "badcfg_model"
    shutil.copytree(model, badcfg)
    (badcfg / "config.json").write_text("{not json", encoding="utf-8")
    notok = d / "notok_model"
    shutil.copytree(model, notok)
    (notok / "tokenizer.json").unlink()
    # damaged run folders
    unfinished = d / "unfinished_run"
    shutil.copytree(d / "run", unfinished)
    (unfinished / "weights.safetensors").unlink()
    badrun = d / "badjson_run"
    shutil.copytree(d / "run", badrun)
    (badrun / "run.json").write_text('{"task": "classify",', encoding="utf-8")
    badweights = d / "badweights_run"
    shutil.copytree(d / "run", badweights)
    (badweights / "weights.safetensors").write_bytes(b"\x00" * 64)
    evil = d / "evil_ckpt_run"  # a run whose last checkpoint carries a pickled callable
    shutil.copytree(d / "run", evil)
    torch.save({"state_dict": {}, "x": Evil()}, evil / "checkpoints" / "last.ckpt")
    changed = d / "changed_data_run"  # a run whose data file changed after it started (its recorded hash differs)
    shutil.copytree(d / "run", changed)
    info = json.loads((changed / "run.json").read_text(encoding="utf-8"))
    info["data_files"]["train"] = {k: "sha256:" + "0" * 64 for k in info["data_files"]["train"]}
    (changed / "run.json").write_text(json.dumps(info), encoding="utf-8")
    with_data = d / "run_with_data"  # a run folder that also holds the data file a new run is given
    shutil.copytree(d / "run", with_data)
    shutil.copy(d / "train.jsonl", with_data / "train.jsonl")
    (d / "conf").mkdir()  # a folder holding a --config file
    (d / "conf" / "c.toml").write_text("batch_size = 8\n", encoding="utf-8")
    # an output folder holding something else
    (d / "other").mkdir()
    (d / "other" / "notes.txt").write_text("mine", encoding="utf-8")
    # a huge line: one 200k-word review
    (d / "huge.jsonl").write_text(json.dumps({"text": "good " * 200_000, "label": "pos"}) + "\n"
                                  + json.dumps({"text": "bad", "label": "neg"}) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    d = tmp_path_factory.mktemp("bad")
    mp.setenv("LIGHTFT_CACHE", str(d / "cache"))
    yield build_env(d, damaged_copies)
    mp.undo()


# (case id, argv, words the error line must contain[, pytest marks]); words may name {run}, {d}, {model}
CASES = [
    # data files (classify: JSONL / CSV / TSV / JSON)
    ("empty file", train_with(data="{bad}/empty.jsonl"), "no records"),
    ("malformed JSONL", train_with(data="{bad}/malformed.jsonl"), "malformed.jsonl:2: malformed JSON"),
    ("JSONL line not an object", train_with(data="{bad}/not_object.jsonl"), "expected a JSON object"),
    ("missing text field", train_with(data="{bad}/missing_text.jsonl"), "missing field 'text'"),
    ("text of the wrong type", train_with(data="{bad}/text_number.jsonl"), "must be strings"),
    ("missing label", train_with(data="{bad}/missing_label.jsonl"), "missing field 'label'"),
    ("a single label", train_with(data="{bad}/one_label.jsonl"), "only one label"),
    ("Latin-1 encoding", train_with(data="{bad}/latin1.csv"), "not UTF-8"),
    ("binary file", train_with(data="{bad}/nul.jsonl"), "NUL byte"),
    ("CSV row with extra field", train_with(data="{bad}/bad_fields.csv"), "bad_fields.csv:3: 3 fields"),
    ("TSV header only", train_with(data="{bad}/header_only.tsv"), "no records"),
    ("unknown extension", train_with(data="{bad}/data.xml"), "cannot tell the format"),
    ("JSON list with a non-object", train_with(data="{bad}/list_item.json"), "item 2 is str"),
    ("val label unseen in train", train_with("--val", "{bad}/unseen_label.jsonl"), "'meh' was not seen in training"),
    ("missing data file", train_with(data="{d}/nope.jsonl"), "not found"),
    ("huge line, --overlong error", train_with("--overlong", "error", data="{d}/huge.jsonl"), "over --max-length"),
    ("--max-length past the model's positions", train_with("--max-length", "200", "--val", "{val}",
                                                                       data="{d}/huge.jsonl"),
     "--max-length 200 is longer than the model can take: its position embeddings allow 64 tokens"),
    # options that clash or make no sense
    ("--resume with --overwrite", train_with("--resume", "--overwrite"), "conflict"),
    ("--out holds another run", [a.replace("{out}", "{run}") for a in train_with()], "already holds a finished run"),
    ("--overwrite of a non-run folder", [a.replace("{out}", "{d}/other") for a in train_with("--overwrite")],
     "replaces only a run folder lightft wrote"),
    ("--resume with nothing to resume", train_with("--resume"), "nothing to resume"),
    ("--resume with other options",
     [a.replace("{out}", "{run}") for a in train_with("--resume", "--val", "{val}", "--batch-size", "3")],
     "--resume with --batch-size 3"),
    ("--resume on changed data", [a.replace("{out}", "{d}/changed_data_run") for a in train_with(
        "--resume", "--val", "{val}", "--batch-size", "8")], "--resume on other data: "),
    ("--allow-data-change without --resume", train_with("--allow-data-change"), "only applies with --resume"),
    ("--resume from a pickled checkpoint", [a.replace("{out}", "{d}/evil_ckpt_run") for a in train_with(
        "--resume", "--val", "{val}", "--batch-size", "8")], "refusing to load"),
    # --overwrite never destroys anything before everything was checked, nor an input (issue 17)
    ("--overwrite with a bad data file", [a.replace("{out}", "{run}") for a in train_with(
        "--overwrite", data="{bad}/malformed.jsonl")], "malformed JSON"),
    ("--overwrite with --train inside the run", [a.replace("{out}", "{d}/run_with_data") for a in train_with(
        "--overwrite", data="{d}/run_with_data/train.jsonl")], "holds an input of this command"),
    ("--out is the --config file's folder", [a.replace("{out}", "{d}/conf") for a in train_with(
        "--overwrite", "--config", "{d}/conf/c.toml")], "holds an input of this command"),
    ("--overwrite of the --init run", [a.replace("{out}", "{run}") for a in train_with("--overwrite", "--init", "{run}")],
     "a run cannot start from itself"),
    ("--overwrite of the --model run", [a.replace("{out}", "{run}").replace("{model}", "{run}")
                                        for a in train_with("--overwrite")], "a run cannot start from itself"),
    ("--init of the --out run", [a.replace("{out}", "{run}") for a in train_with("--init", "{run}")],
     "a run cannot start from itself"),
    ("--overwrite of the folder holding the model", [a.replace("{out}", "{d}") for a in train_with("--overwrite")],
     "holds an input of this command"),
    ("--out inside a missing read-only place", [a.replace("{out}", "/proc/lightft/run") for a in train_with()],
     "cannot write in"),
    ("--num-nodes 2 on one machine", train_with("--num-nodes", "2", "--accelerator", "cpu"),
     "nothing starts the other nodes"),
    ("--full with --lora-r", train_with("--lora-r", "16"), "--lora-r has no effect with --full"),
    ("--batch-size 0", train_with("--batch-size", "0"), "at least 1"),
    ("--epochs 0, no --max-steps", train_with("--epochs", "0", "--max-steps", "-1"), "nothing to train"),
    ("--checkpoint-every 0", train_with("--checkpoint-every", "0"), "at least 1"),
    ("fsdp on CPU", train_with("--strategy", "fsdp", "--accelerator", "cpu", "--devices", "2"), "requires a GPU"),
    ("--devices nonsense", train_with("--devices", "lots"), "--devices lots"),
    # option values out of range are one line naming the flag (more: tests/test_option_metadata.py)
    ("--devices 0", train_with("--devices", "0", "--accelerator", "cpu"), "--devices 0"),
    ("--accelerator gpu without a GPU", train_with("--accelerator", "gpu"), "--accelerator gpu --devices auto",
     pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    ("--num-workers -1", train_with("--num-workers", "-1"), "--num-workers must be at least 0"),
    ("--val-every -1", train_with("--val-every", "-1"), "--val-every must be at least 1"),
    ("--limit-train -3", train_with("--limit-train", "-3"), "--limit-train must be at least 1"),
    ("--lr not a number", train_with("--lr", "fast"), "'fast' is not a valid float"),
    ("unknown task", ["train", "sing", "--model", "{model}"], "'sing' is not"),
    # model folders
    ("model folder missing", [a.replace("{model}", "{d}/nope") for a in train_with()], "model folder not found"),
    ("pickled weights only", [a.replace("{model}", "{d}/pickled_model") for a in train_with()],
     "never loaded"),
    ("truncated safetensors", [a.replace("{model}", "{d}/truncated_model") for a in train_with()],
     "truncated or corrupt"),
    ("malformed config.json", [a.replace("{model}", "{d}/badcfg_model") for a in train_with()], "config.json"),
    ("no tokenizer.json", [a.replace("{model}", "{d}/notok_model") for a in train_with()], "missing tokenizer.json"),
    # --config files: only known keys, plain values
    ("YAML python tag", train_with("--config", "{bad}/python_tag.yaml"), "malformed YAML"),
    ("config unknown key", train_with("--config", "{bad}/unknown_key.yaml"), "unknown key 'learning_rate'"),
    ("config wrong type", train_with("--config", "{bad}/wrong_type.yaml"), "batch_size"),
    ("config nested table", train_with("--config", "{bad}/nested.toml"), "lora_r"),
    ("malformed TOML", train_with("--config", "{bad}/malformed.toml"), "malformed TOML"),
    ("config as .json", train_with("--config", "{bad}/config.json"), "must end in .toml, .yaml or .yml"),
    ("config not a mapping", train_with("--config", "{bad}/list_top.yaml"), "expected a mapping"),
    ("config file missing", train_with("--config", "{d}/nope.yaml"), "nope.yaml"),
    # eval / predict
    ("eval: empty data", ["eval", "classify", "--model", "{run}", "--data", "{bad}/empty.jsonl", "--metrics-out",
                          "{out}"], "no records"),
    ("eval: unseen label", ["eval", "classify", "--model", "{run}", "--data", "{bad}/unseen_label.jsonl",
                            "--metrics-out", "{out}"], "was not seen in training"),
    ("eval: unfinished run", ["eval", "classify", "--model", "{d}/unfinished_run", "--data", "{val}"],
     "did not finish"),
    ("eval: damaged run.json", ["eval", "classify", "--model", "{d}/badjson_run", "--data", "{val}"], "malformed JSON"),
    ("eval: damaged weights", ["eval", "classify", "--model", "{d}/badweights_run", "--data", "{val}"],
     "weights.safetensors"),
    ("eval: missing --data", ["eval", "classify", "--model", "{run}"], "--data"),
    ("predict: base model", ["predict", "classify", "--model", "{model}", "--data", "{val}", "--output", "{out}"],
     "a base model has no trained classify head; give a run folder"),
    ("predict: malformed data", ["predict", "classify", "--model", "{run}", "--data", "{bad}/malformed.jsonl",
                                 "--output", "{out}"], "malformed JSON"),
    # export / convert
    ("export: not a run", ["export", "{model}", "--out", "{out}"], "not a run folder"),
    ("export: unfinished run", ["export", "{d}/unfinished_run", "--out", "{out}"], "did not finish"),
    ("export: damaged weights", ["export", "{d}/badweights_run", "--out", "{out}"], "weights.safetensors"),
    ("export: adapter of a --full run", ["export", "{run}", "--out", "{out}", "--adapter"], "--merged"),
    ("export: --out not empty", ["export", "{run}", "--out", "{d}/other"], "not empty"),
    ("export: --force onto the run itself", ["export", "{run}", "--out", "{run}", "--force"],
     "is an input of this command"),
    ("export: --force onto the run's parent", ["export", "{run}", "--out", "{d}", "--force"],
     "holds an input of this command"),
    ("export: --force onto the base model", ["export", "{run}", "--out", "{model}", "--force"],
     "is an input of this command"),
    ("export: --force onto the user's folder", ["export", "{run}", "--out", "{d}/other", "--force"],
     "replaces only an export folder lightft wrote"),
    ("export: --force onto another run", ["export", "{run}", "--out", "{d}/unfinished_run", "--force"],
     "holds a lightft run"),
    # predict / eval outputs are never inputs (more: tests/test_bad_inputs_models.py)
    ("predict: --output over the run's run.json", ["predict", "classify", "--model", "{run}", "--data", "{val}",
                                                   "--output", "{run}/run.json"], "(a file of {run})"),
    ("eval: --metrics-out over the weights", ["eval", "classify", "--model", "{run}", "--data", "{val}",
                                              "--metrics-out", "{run}/weights.safetensors"], "(a file of {run})"),
    ("eval: --metrics-out is a folder", ["eval", "classify", "--model", "{run}", "--data", "{val}", "--metrics-out",
                                         "{d}"], "is a directory"),
    ("convert: not a GGUF file", ["convert", "gguf", "{bad}/ok.csv", "{out}"], "not a readable GGUF file"),
    ("convert: empty file", ["convert", "gguf", "{bad}/empty.jsonl", "{out}"], "not a readable GGUF file"),
    ("convert: missing file", ["convert", "gguf", "{d}/nope.gguf", "{out}"], "not found"),
    # inspect
    ("inspect: missing folder", ["inspect", "{d}/nope"], "model folder not found"),
    ("inspect: pickled weights", ["inspect", "{d}/pickled_model"], "never loaded"),
    ("inspect: truncated weights", ["inspect", "{d}/truncated_model"], "truncated or corrupt"),
    ("inspect: malformed config", ["inspect", "{d}/badcfg_model"], "config.json"),
]


@pytest.mark.parametrize("argv, expected", [pytest.param(*c[1:3], id=c[0], marks=c[3:]) for c in CASES])
def test_bad_input_gives_one_line_error_and_no_output(env, tmp_path, capsys, argv, expected):
    check_case(env, tmp_path, capsys, argv, expected.format(**env) if "{" in expected else expected)
    assert not Path("pwned.txt").exists()


def test_config_values_are_checked_against_the_option_types(tmp_path):
    from lightft.errors import LightftError
    from lightft.options import Options, read_config_file

    ok = tmp_path / "ok.yaml"
    ok.write_text("lr: 1e-4\ndevices: 2\nwarmup: 0\nschedule: cosine\n", encoding="utf-8")  # YAML's 1e-4 is a str
    opts = Options.from_dict(read_config_file(ok), str(ok))
    assert (opts.lr, opts.devices, opts.warmup, opts.schedule) == (1e-4, "2", 0.0, "cosine")
    for bad, words in [("epochs: true", "epochs must be int"), ("schedule: zigzag", "not one of"),
                       ("lora: 'yes'", "lora must be bool"), ("batch_size: [1, 2]", "batch_size must be int")]:
        f = tmp_path / "bad.yaml"
        f.write_text(bad + "\n", encoding="utf-8")
        with pytest.raises(LightftError, match=words):
            Options.from_dict(read_config_file(f), str(f))

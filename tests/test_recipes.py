"""Every shipped recipe (scripts/**/*.toml + its script) parses, and builds its data and model on tiny stand-ins.

The TOMLs hold settings only; the scripts add --model, --train / --val (the carved honest splits) and --seed.
Here each TOML is combined with tiny files of the right format and a tiny model of the right family,
the task's DataModule is set up and one training batch goes through the module to a finite loss.
"""

from __future__ import annotations

import json
import math
import subprocess
import tomllib
from pathlib import Path

import pytest

from conftest import save_hf, tiny_hf_model
from lightft.options import Options, read_config_file
from supervised_utils import NER_SENTENCES, SENTIMENT, conll_text, tiny_tokenizer_files, write_lines
from tiny_decoder import SIMPLE_CHAT, tiny_decoder

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
RECIPES = {  # TOML -> (task, the script that runs it)
    "sst2-full.toml": ("classify", "sst2.sh"),
    "sst2-lora.toml": ("classify", "sst2.sh"),
    "sst2-smollm2.toml": ("classify", "sst2.sh"),
    "sst2-distill.toml": ("classify", "sst2.sh"),
    "conll2003-full.toml": ("ner", "conll2003.sh"),
    "qa-squad.toml": ("qa", "qa_transfer.sh"),
    "qa-bioasq.toml": ("qa", "qa_transfer.sh"),
    "mlm-medical.toml": ("mlm", "qa_transfer.sh"),
    "decoder/medical-lm.toml": ("lm", "decoder/medical_lm.sh"),
    "decoder/alpaca-instruct.toml": ("instruct", "decoder/alpaca_instruct.sh"),
}
FEWSHOT = ("decoder/fewshot-capitals.toml", "decoder/fewshot_capitals.sh")


def test_every_recipe_is_listed_and_its_script_uses_it():
    tomls = {str(p.relative_to(SCRIPTS)) for p in SCRIPTS.rglob("*.toml")}
    assert tomls == set(RECIPES) | {FEWSHOT[0]}
    for toml, script in [*((t, s) for t, (_, s) in RECIPES.items()), FEWSHOT]:
        assert Path(toml).name in (SCRIPTS / script).read_text(), (toml, script)
    for script in sorted(SCRIPTS.rglob("*.sh")):
        subprocess.run(["bash", "-n", str(script)], check=True)


def squad_file(path: Path) -> Path:
    contexts = ["john smith lives in paris .", "john works at acme corp .", "smith works at acme in paris"]
    paragraphs = [{"context": c, "qas": [{"id": f"q{i}_000", "question": "who works at acme",
                                          "answers": [{"text": c.split()[0], "answer_start": 0}]}]}
                  for i, c in enumerate(contexts * 3)]
    path.write_text(json.dumps({"version": "t", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


def tiny_files(task: str, root: Path) -> Path:
    if task == "classify":
        return write_lines(root / "data.jsonl", [{"text": t, "label": y} for t, y in SENTIMENT])
    if task == "ner":
        (root / "data.txt").write_text(conll_text(NER_SENTENCES * 2), encoding="utf-8")
        return root / "data.txt"
    if task == "qa":
        return squad_file(root / "data.json")
    if task in ("mlm", "lm"):
        return write_lines(root / "data.txt", [f"{w} works at acme in paris and the film was good ." * 3
                                               for w in ("john", "smith", "it", "the")])
    (root / "data.json").write_text(json.dumps([{"instruction": f"Say {w}", "input": "", "output": w}
                                                for w in ("good", "bad", "great", "awful") * 2]))
    return root / "data.json"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    encoder = save_hf(tiny_hf_model("bert", vocab_size=120, max_position_embeddings=512), root / "bert")
    tiny_tokenizer_files(encoder)
    decoder = tiny_decoder(root, "llama", chat_template=SIMPLE_CHAT, max_position_embeddings=1024)
    return {"encoder": encoder, "decoder": decoder}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_builds(recipe, models, tmp_path):
    from lightft.train.registry import get_task
    from lightft.tokenizer import load_tokenizer
    from lightft.runs.folder import check_train_options
    from lightft.train.run import build_module

    task = RECIPES[recipe][0]
    settings = read_config_file(SCRIPTS / recipe)
    assert not {"model", "train", "val", "out", "seed"} & set(settings)  # the script passes those
    model = models["decoder" if task in ("lm", "instruct") or "smollm2" in recipe else "encoder"]
    data = tiny_files(task, tmp_path)
    # A distillation recipe's script passes --teachers (runs it trains first); here they are named only, and
    # the batch gets uniform soft targets in their place, so the TOML's own loss settings are exercised.
    distill = "distill_alpha" in settings
    teachers = {"teachers": str(tmp_path / "teacher")} if distill else {}
    opts = Options.from_dict({**settings, **teachers, "model": str(model), "train": str(data), "val": str(data),
                              "out": str(tmp_path / "run"), "cache": False}, recipe)
    check_train_options(opts)
    tokenizer = load_tokenizer(model)
    dm = get_task(task).datamodule(tokenizer, opts, train_file=opts.train, val_file=opts.val)
    dm.prepare_data()
    dm.setup("fit")
    if distill:
        n = len(dm.label_names)
        dm.set_soft_targets({e["line"]: [1 / n] * n for e in dm.datasets["train"]})
    module = build_module(task, str(model), opts, dm.task_args())
    batch = next(iter(dm.train_dataloader()))
    loss = module.loss(batch, module(batch))
    assert math.isfinite(float(loss.detach()))
    assert ("soft_targets" in batch) == distill


def test_fewshot_recipe_runs_through_its_config(models, tmp_path, capsys):
    from supervised_utils import run_cli

    rows = [{"question": f"What is the capital of Land {i}?", "answer": f"Town {i}", "relation": "capital"}
            for i in range(7)] + [{"question": f"What is the currency of Land {i}?", "answer": f"Coin {i}",
                                   "relation": "currency"} for i in range(7)]
    data = write_lines(tmp_path / "qa.jsonl", rows)
    code, out, err = run_cli(["fewshot", "--config", SCRIPTS / FEWSHOT[0], "--model", models["decoder"],
                              "--data", data, "--seeds", "2", "--max-new-tokens", "2", "--limit", "4"], capsys)
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    settings = tomllib.loads((SCRIPTS / FEWSHOT[0]).read_text())
    assert report["select"] == settings["select"] and report["seeds"] == 2  # the file's value; the flag wins
    assert [r["shots"] for r in report["results"]] == settings["shots"]
    (tmp_path / "bad.toml").write_text('shotz = [1]\n')
    code, _, err = run_cli(["fewshot", "--config", tmp_path / "bad.toml", "--model", models["decoder"],
                            "--data", data], capsys)
    assert code == 2 and "unknown key 'shotz'" in err and "Traceback" not in err

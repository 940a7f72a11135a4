"""Bad-input corpus, part 3: hostile model folders, chat templates and config files, and out-of-range values.

- model configs are checked before anything is built (lightft/families/common.py, lightft/config.py):
  zero / negative / float / text dimensions, heads that do not divide the width, dropout outside
  [0, 1), a layer count or size beyond reason, integer embedding weights;
- a model folder may only name its own files: shards outside it, side files linked out of it;
- everything quoted from a file is escaped: tensor names, `raise_exception` messages;
- chat templates render within a time and size budget (lightft/chat_template.py); YAML / TOML
  configs are bounded (lightft/safe_config.py);
- generate / fewshot values are finite and in range (lightft/cli/values.py); output files are
  checked before any work (lightft/runs/safe_output.py).
Every case: one escaped `error:` line, non-zero exit, nothing written (tests/bad_cases.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.bad_cases import build_env, check_case, model_variant, train_with

CONFIGS = {  # folder name -> config.json keys replaced in a copy of the tiny BERT
    "cfg_width_0": {"hidden_size": 0},
    "cfg_width_negative": {"hidden_size": -32},
    "cfg_width_float": {"hidden_size": 32.0},
    "cfg_width_text": {"hidden_size": "32"},
    "cfg_layers_bool": {"num_hidden_layers": True},
    "cfg_heads_5": {"num_attention_heads": 5},
    "cfg_heads_missing": {"num_attention_heads": None},
    "cfg_layers_1e8": {"num_hidden_layers": 100_000_000},
    "cfg_huge": {"hidden_size": 65536, "num_attention_heads": 64, "intermediate_size": 1_048_576,
                 "num_hidden_layers": 1024},
    "cfg_dropout_5": {"hidden_dropout_prob": 5},
    "cfg_dropout_negative": {"attention_probs_dropout_prob": -0.1},
    "cfg_dropout_1": {"hidden_dropout_prob": 1.0},
    "cfg_vocab_0": {"vocab_size": 0},
    "cfg_positions_0": {"max_position_embeddings": 0},
    "cfg_intermediate_float": {"intermediate_size": 1.5},
    "cfg_eps_0": {"layer_norm_eps": 0},
    "cfg_activation_number": {"hidden_act": 5},
    "cfg_types_negative": {"type_vocab_size": -1},
    "cfg_roberta_pad": {"model_type": "roberta", "pad_token_id": 600},
}
TEMPLATES = {  # folder name -> chat template of a copy of the tiny GPT-2
    "tpl_loops": "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "tpl_repeat": "{{ 'x' * 4000000000 }}",
    "tpl_recursive": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "tpl_include": "{% include 'other.jinja' %}",
    "tpl_import": "{% import 'macros.jinja' as m %}{{ m.x() }}",
    "tpl_raise": "{{ raise_exception('roles must alternate \x1b[31m\nerror: forged line') }}",
    "tpl_width": "{{ '%999999999s' % messages[0]['content'] }}",
    "tpl_replace": "{% set s = 'a' * 1000000 %}{{ s|replace('a', s) }}",
    "tpl_concat": "{% set ns = namespace(x='ab') %}{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
    "tpl_power": "{{ 9 ** 999999 }}",
    "tpl_not_text": 5,
}


def hostile_models(d: Path, env: dict[str, str]) -> None:
    from tiny_decoder import tiny_decoder

    for name, patch in CONFIGS.items():
        model_variant(d, name, patch)
    # weights: integer embeddings, a tensor whose name carries terminal escapes
    ints = model_variant(d, "int_embeddings")
    state = load_file(str(ints / "model.safetensors"))
    key = next(k for k in state if k.endswith("word_embeddings.weight"))
    state[key] = state[key].round().to(torch.int64)
    save_file(state, str(ints / "model.safetensors"))
    ansi = model_variant(d, "ansi_tensor")
    state = load_file(str(ansi / "model.safetensors"))
    state["\x1b[2Jpwned\nerror: all fine"] = torch.zeros(2)
    save_file(state, str(ansi / "model.safetensors"))
    # config.json that no parser should be handed whole
    model_variant(d, "cfg_latin1")
    (d / "cfg_latin1" / "config.json").write_bytes('{"model_type": "bert", "x": "caf\xe9"}'.encode("latin-1"))
    model_variant(d, "cfg_deep")
    (d / "cfg_deep" / "config.json").write_text('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}", encoding="utf-8")
    # sharded indexes naming files outside the folder
    for name, shard in (("shard_dotdot", "../../x.safetensors"), ("shard_absolute", "/etc/hostname"),
                        ("shard_number", 5)):
        folder = model_variant(d, name, drop=("model.safetensors",))
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a.weight": shard}}),
                                                             encoding="utf-8")
    # a base model whose vocab.txt links to a file outside it, and a run made from it
    (d / "secret.txt").write_text("api-key: do-not-ship\n", encoding="utf-8")
    linked = model_variant(d, "linked_model")
    (linked / "vocab.txt").symlink_to(d / "secret.txt")
    shutil.copytree(d / "run", d / "linked_run")
    info = json.loads((d / "linked_run" / "run.json").read_text(encoding="utf-8"))
    info["base_model"] = str(linked)
    (d / "linked_run" / "run.json").write_text(json.dumps(info), encoding="utf-8")
    # decoders: one plain, one per hostile chat template
    gpt2 = tiny_decoder(d, "gpt2")
    env["gpt2"] = str(gpt2)
    for name, template in TEMPLATES.items():
        folder = d / name
        shutil.copytree(gpt2, folder)
        cfg_path = folder / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg["chat_template"] = template
        cfg_path.write_text(json.dumps(cfg), encoding="utf-8")
    for name, patch in (("gpt2_heads_3", {"n_head": 3}), ("gpt2_layers_0", {"n_layer": 0})):
        shutil.copytree(gpt2, d / name)
        cfg = json.loads((d / name / "config.json").read_text(encoding="utf-8"))
        cfg.update(patch)
        (d / name / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    (d / "qa.jsonl").write_text("".join(json.dumps({"question": f"q{i}?", "answer": f"a{i}"}) + "\n" for i in range(4)),
                                encoding="utf-8")
    (d / "chat.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                           {"role": "assistant", "content": "yo"}]}) + "\n",
                                  encoding="utf-8")
    (d / "big.yaml").write_text("# padding\n" * 10_000 + "lr: 1e-3\n", encoding="utf-8")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    d = tmp_path_factory.mktemp("bad_models")
    mp.setenv("LIGHTFT_CACHE", str(d / "cache"))
    yield build_env(d, hostile_models)
    mp.undo()


def inspect(name: str) -> list[str]:
    return ["inspect", "{d}/" + name]


GEN = ["generate", "--model", "{gpt2}", "--prompt", "hi", "--max-new-tokens", "2"]
FEW = ["fewshot", "--model", "{gpt2}", "--data", "{d}/qa.jsonl", "--shots", "0", "--max-new-tokens", "2"]
CASES = [
    # model configs, checked before any module is built
    ("config: hidden_size 0", inspect("cfg_width_0"), "config.json: hidden_size = 0 is out of range; it must be between 1"),
    ("config: hidden_size -32", inspect("cfg_width_negative"), "hidden_size = -32 is out of range"),
    ("config: hidden_size 32.0", inspect("cfg_width_float"), "hidden_size must be a whole number, not 32.0"),
    ("config: hidden_size '32'", inspect("cfg_width_text"), "hidden_size must be a whole number, not '32'"),
    ("config: num_hidden_layers true", inspect("cfg_layers_bool"), "num_hidden_layers must be a whole number, not True"),
    ("config: heads do not divide width", inspect("cfg_heads_5"),
     "hidden_size = 32 is not divisible by num_attention_heads = 5"),
    ("config: heads missing", inspect("cfg_heads_missing"), "missing required key 'num_attention_heads'"),
    ("config: 100000000 layers (inspect)", inspect("cfg_layers_1e8"),
     "num_hidden_layers = 100000000 is out of range; it must be between 1 and 1,024"),
    ("config: 100000000 layers (train)", train_with(model="{d}/cfg_layers_1e8"), "num_hidden_layers = 100000000"),
    ("config: 1.6e14 parameters", inspect("cfg_huge"), "the dimensions describe about 1.58e+14 parameters"),
    ("config: dropout 5", inspect("cfg_dropout_5"), "hidden_dropout_prob = 5 is out of range; it must be in [0, 1)"),
    ("config: dropout -0.1", inspect("cfg_dropout_negative"), "attention_probs_dropout_prob = -0.1 is out of range"),
    ("config: dropout 1.0", train_with(model="{d}/cfg_dropout_1"), "hidden_dropout_prob = 1.0 is out of range"),
    ("config: vocab_size 0", inspect("cfg_vocab_0"), "vocab_size = 0 is out of range"),
    ("config: max_position_embeddings 0", inspect("cfg_positions_0"), "max_position_embeddings = 0 is out of range"),
    ("config: intermediate_size 1.5", inspect("cfg_intermediate_float"), "intermediate_size must be a whole number"),
    ("config: layer_norm_eps 0", inspect("cfg_eps_0"), "layer_norm_eps = 0 is out of range; it must be in (0, inf]"),
    ("config: hidden_act 5", inspect("cfg_activation_number"), "activation 5 is not supported"),
    ("config: type_vocab_size -1", inspect("cfg_types_negative"), "type_vocab_size = -1 is out of range"),
    ("config: RoBERTa pad id past the positions", inspect("cfg_roberta_pad"), "pad_token_id = 600 is out of range"),
    ("config: GPT-2 n_head 3", ["inspect", "{d}/gpt2_heads_3"], "n_embd = 32 is not divisible by n_head = 3"),
    ("config: GPT-2 n_layer 0", ["generate", "--model", "{d}/gpt2_layers_0", "--prompt", "hi"], "n_layer = 0"),
    ("config.json not UTF-8", inspect("cfg_latin1"), "config.json:1: not UTF-8 text"),
    ("config.json nested 100k deep", inspect("cfg_deep"), "config.json: JSON nested too deeply"),
    ("integer embedding weights", train_with(model="{d}/int_embeddings"),
     "word_embeddings.weight' holds int64 values; model weights must be floating point"),
    # a model folder may only name its own files; what is quoted from it is escaped
    ("shard path ../../x", inspect("shard_dotdot"), "shard '../../x.safetensors' points outside the folder"),
    ("shard path absolute", inspect("shard_absolute"), "shard '/etc/hostname' points outside the folder"),
    ("shard name a number", inspect("shard_number"), "shard name 5 is not a file name"),
    ("export: vocab.txt linked out of the model", ["export", "{d}/linked_run", "--out", "{out}"],
     "vocab.txt: is a symbolic link to a file outside the model folder"),
    ("tensor name with terminal escapes", train_with(model="{d}/ansi_tensor"),
     "unexpected key \\x1b[2Jpwned\\nerror: all fine"),
    # chat templates: sandboxed, within a time and size budget
    ("template: nested loops", GEN[:2] + ["{d}/tpl_loops"] + GEN[3:], "took longer than 2 s"),
    ("template: 'x' * 4000000000", GEN[:2] + ["{d}/tpl_repeat"] + GEN[3:], "a * repetition would hold 4e+09 items"),
    ("template: recursive macro", GEN[:2] + ["{d}/tpl_recursive"] + GEN[3:], "recursion too deep"),
    ("template: include", GEN[:2] + ["{d}/tpl_include"] + GEN[3:], "include is not allowed in a chat template"),
    ("template: import", GEN[:2] + ["{d}/tpl_import"] + GEN[3:], "import is not allowed in a chat template"),
    ("template: raise_exception with escapes", GEN[:2] + ["{d}/tpl_raise"] + GEN[3:],
     "chat template: roles must alternate \\x1b[31m\\nerror: forged line"),
    ("template: %-format width 999999999", GEN[:2] + ["{d}/tpl_width"] + GEN[3:], "a format width or precision over"),
    ("template: |replace blow-up", GEN[:2] + ["{d}/tpl_replace"] + GEN[3:], "|replace would hold 1e+12 items"),
    ("template: ~ doubling in a loop", GEN[:2] + ["{d}/tpl_concat"] + GEN[3:], "a ~ concatenation would hold"),
    ("template: 9 ** 999999", GEN[:2] + ["{d}/tpl_power"] + GEN[3:], "a ** of integers would need"),
    ("template: not text", GEN[:2] + ["{d}/tpl_not_text"] + GEN[3:], "chat_template must be a string"),
    ("template: instruct training, nested loops",
     train_with("--template", "chat", task="instruct", model="{d}/tpl_loops", data="{d}/chat.jsonl"),
     "took longer than 2 s"),
    # --config files: bounded YAML / TOML
    ("YAML alias bomb", train_with("--config", "{bad}/alias_bomb.yaml"), "YAML expands to more than 100,000 values"),
    ("YAML recursive alias", train_with("--config", "{bad}/alias_recursive.yaml"), "YAML alias refers to itself"),
    ("YAML not UTF-8", train_with("--config", "{bad}/latin1.yaml"), "latin1.yaml:1: not UTF-8 text (byte 0xe9"),
    ("YAML nested 3000 deep", train_with("--config", "{bad}/deep.yaml"), "deep.yaml: YAML nested too deeply"),
    ("TOML nested 3000 deep", train_with("--config", "{bad}/deep.toml"), "deep.toml: TOML nested too deeply"),
    ("config file of 100 KB", train_with("--config", "{d}/big.yaml"), "too large for a config file"),
    # generate: finite values in range, before the model is loaded
    ("generate --temperature nan", GEN + ["--temperature", "nan"], "'--temperature': nan is not a finite number"),
    ("generate --temperature inf", GEN + ["--temperature", "inf"], "inf is not a finite number"),
    ("generate --temperature -1", GEN + ["--temperature", "-1"], "-1.0 is out of range; it must be at least 0"),
    ("generate --top-p 0", GEN + ["--top-p", "0"], "'--top-p': 0.0 is out of range; it must be in (0, 1]"),
    ("generate --top-p 1.5", GEN + ["--top-p", "1.5"], "1.5 is out of range"),
    ("generate --top-p nan", GEN + ["--top-p", "nan"], "'--top-p': nan is not a finite number"),
    ("generate --top-k -1", GEN + ["--top-k", "-1"], "'--top-k': -1 is out of range"),
    ("generate --max-new-tokens 0", GEN + ["--max-new-tokens", "0"], "'--max-new-tokens': 0 is out of range"),
    ("generate --max-new-tokens ten", GEN + ["--max-new-tokens", "ten"], "'ten' is not an integer"),
    ("generate --batch-size 0", GEN + ["--batch-size", "0"], "'--batch-size': 0 is out of range"),
    ("generate --threads -1", GEN + ["--threads", "-1"], "'--threads': -1 is not a number of threads"),
    ("generate --threads 0", GEN + ["--threads", "0"], "'--threads': 0 is not a number of threads"),
    ("generate --seed -1", GEN + ["--seed", "-1"], "'--seed': -1 is out of range"),
    ("generate --seed 2**64", GEN + ["--seed", str(2**64)], "is out of range"),
    ("generate --lookahead -1", GEN + ["--lookahead", "-1"], "'--lookahead': -1 is out of range"),
    ("generate --dtype int8", GEN + ["--dtype", "int8"], "dtype 'int8' is not supported"),
    # fewshot
    ("fewshot --seeds 0", FEW + ["--seeds", "0"], "'--seeds': 0 is out of range"),
    ("fewshot --limit 0", FEW + ["--limit", "0"], "'--limit': 0 is out of range"),
    ("fewshot --limit -1", FEW + ["--limit", "-1"], "'--limit': -1 is out of range"),
    ("fewshot --shots ''", FEW + ["--shots", ""], "expected a comma list of numbers of demonstrations"),
    ("fewshot --shots a,b", FEW + ["--shots", "a,b"], "expected a comma list"),
    ("fewshot --shots -1", FEW + ["--shots", "-1"], "--shots '-1'"),
    ("fewshot --batch-size 0", FEW + ["--batch-size", "0"], "'--batch-size': 0 is out of range"),
    ("fewshot --max-new-tokens 0", FEW + ["--max-new-tokens", "0"], "'--max-new-tokens': 0 is out of range"),
    ("fewshot --threads 0", FEW + ["--threads", "0"], "'--threads': 0 is not a number of threads"),
    ("fewshot --seed -5", FEW + ["--seed", "-5"], "'--seed': -5 is out of range"),
    # output files: checked before any work
    ("fewshot --metrics-out into a missing folder", FEW + ["--metrics-out", "{d}/missing/m.json"],
     "--metrics-out {d}/missing/m.json: the folder {d}/missing does not exist"),
    ("eval --metrics-out into a missing folder", ["eval", "classify", "--model", "{run}", "--data", "{val}",
                                                  "--metrics-out", "{d}/missing/m.json"], "does not exist"),
    ("predict --output into a missing folder", ["predict", "classify", "--model", "{run}", "--data", "{val}",
                                                "--output", "{d}/missing/p.jsonl"], "does not exist"),
    ("predict --output is --data", ["predict", "classify", "--model", "{run}", "--data", "{val}", "--output", "{val}"],
     "is an input of this command"),
    ("eval --metrics-out is --data", ["eval", "classify", "--model", "{run}", "--data", "{val}", "--metrics-out",
                                      "{val}"], "is an input of this command"),
    ("eval --metrics-out over the run's run.json", ["eval", "classify", "--model", "{run}", "--data", "{val}",
                                                    "--metrics-out", "{run}/run.json"], "is an input of this command"),
    ("predict --output is a folder", ["predict", "classify", "--model", "{run}", "--data", "{val}", "--output", "{d}"],
     "is a directory"),
]


@pytest.mark.parametrize("argv, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_gives_one_line_error_and_no_output(env, tmp_path, capsys, argv, expected):
    check_case(env, tmp_path, capsys, argv, expected.format(**env) if "{d}" in expected else expected)

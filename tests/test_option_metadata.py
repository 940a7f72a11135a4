"""Option facts come from each field's metadata (lightft/options.py), so no hand-kept list can drift:
resume checks, cache keys, eval flags, --full refusals and per-task --help are all derived from it."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest
from click.testing import CliRunner

from lightft.cli.main import cli, main
from lightft.cli.options import TASK_NAMES
from lightft.errors import LightftError
from lightft.options import (GROUPS, LoraOptions, Options, cache_options, groups_for, names_where,
                             resume_must_match)
from lightft.runs.folder import check_resume_matches, check_train_options
from lightft.train.registry import TASKS

# Options that may change when a run is resumed: they touch neither the data nor the training
# trajectory (how long to train, where and how fast to run, what to show). Every other field must be
# marked resume=True; a new field has to be put on one side or the other, or this test fails.
MAY_CHANGE_ON_RESUME = {"out", "resume", "overwrite", "epochs", "max_steps", "eval_batch_size", "num_workers",
                        "cache", "limit_val", "max_answer_length", "n_best", "top_k", "question_groups",
                        "precision", "accelerator", "devices", "strategy", "threads", "val_every",
                        "checkpoint_every", "log_every", "compile", "pad_to_multiple", "grad_checkpointing",
                        "progress", "kernels", "logger", "allow_data_change", "requeue_signal"}


def changed_value(f: dataclasses.Field):
    """A valid value of the field's type that differs from its default."""
    if "choices" in f.metadata:
        return next(c for c in f.metadata["choices"] if c != f.default)
    hint = typing.get_type_hints(Options)[f.name]
    base = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    kind = base[0]
    if kind is bool:
        return not f.default
    if kind is int:
        return (f.default or 1) + 1
    if kind is float:
        return 0.5 if f.default != 0.5 else 0.25
    return f"changed-{f.name}"


def test_every_field_is_classified_for_resume():
    fields = {f.name for f in dataclasses.fields(Options)}
    must = set(resume_must_match())
    assert must.isdisjoint(MAY_CHANGE_ON_RESUME)
    assert fields - must - MAY_CHANGE_ON_RESUME == set(), "mark the new option resume=True or allow it above"
    # everything that shapes the token cache shapes the data, so a resume must keep it
    assert set(names_where("cache")) <= must
    # the fields a session found missing from the old hand-kept list are covered now
    assert {"packing", "template", "train_on_inputs", "doc_stride", "max_query_length", "doc_per_line",
            "mlm_probability", "whole_word_mask", "label_all_subwords", "pooling"} <= must


@pytest.mark.parametrize("name", resume_must_match())
def test_resume_refuses_each_changed_option_naming_it(name, tmp_path):
    saved = Options(out=str(tmp_path)).to_dict()
    now = Options(out=str(tmp_path), **{name: changed_value(Options.__dataclass_fields__[name])})
    with pytest.raises(LightftError) as err:
        check_resume_matches(saved, now, tmp_path)
    assert f"--{name.replace('_', '-')}" in str(err.value) and "--resume" in str(err.value)


@pytest.mark.parametrize("name", sorted(MAY_CHANGE_ON_RESUME & {f.name for f in dataclasses.fields(Options)}))
def test_resume_accepts_runtime_changes(name, tmp_path):
    saved = Options(out=str(tmp_path)).to_dict()
    now = Options(**{"out": str(tmp_path), name: changed_value(Options.__dataclass_fields__[name])})
    check_resume_matches(saved, now, tmp_path)


def test_resume_of_a_run_that_predates_an_option_compares_with_its_default(tmp_path):
    saved = Options(out=str(tmp_path)).to_dict()
    del saved["packing"]
    check_resume_matches(saved, Options(out=str(tmp_path)), tmp_path)
    with pytest.raises(LightftError, match="--packing"):
        check_resume_matches(saved, Options(out=str(tmp_path), packing=True), tmp_path)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_cache_key_changes_with_every_tokenisation_option(task):
    base = cache_options(Options(), task)
    names = [f.name for g in groups_for(task) for f in g.own_fields() if f.metadata["cache"]]
    assert names and set(base) == set(names)
    for name in names:
        other = cache_options(Options(**{name: changed_value(Options.__dataclass_fields__[name])}), task)
        assert other != base, name


def test_task_options_never_leak_into_other_tasks_cache_keys():
    assert "doc_stride" in cache_options(Options(), "qa") and "doc_stride" not in cache_options(Options(), "classify")
    assert "packing" in cache_options(Options(), "instruct") and "packing" not in cache_options(Options(), "lm")


def test_lora_settings_refused_with_full_come_from_the_lora_group(tmp_path):
    for f in LoraOptions.own_fields():
        opts = Options(out=str(tmp_path), train="x", lora=False, **{f.name: changed_value(f)})
        with pytest.raises(LightftError, match=f"--{f.name.replace('_', '-')} has no effect with --full"):
            check_train_options(opts)


def test_registry_and_cli_task_names_agree():
    assert tuple(TASKS) == TASK_NAMES
    assert all(set(g.tasks) <= set(TASK_NAMES) for g in GROUPS)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_train_help_lists_common_options_and_only_the_tasks_own(task):
    text = CliRunner().invoke(cli, ["train", task, "--help"], terminal_width=200).output
    for g in GROUPS:
        for f in g.own_fields():
            shown = f"--{f.name.replace('_', '-')} " in text or f"--{f.name.replace('_', '-')}\n" in text
            assert shown == (not g.tasks or task in g.tasks), (task, f.name)


def test_eval_help_lists_eval_options_only():
    text = CliRunner().invoke(cli, ["eval", "classify", "--help"], terminal_width=200).output
    assert "--label-column" in text and "--batch-size" in text and "--threads" in text
    assert "--lora-r" not in text and "--doc-stride" not in text and "--epochs" not in text


@pytest.mark.parametrize("args, needle", [
    (["--lora", "--full"], "--lora and --full conflict"),
    (["--warmup", "-1"], "--warmup must be at least 0"),
    (["--grad-clip", "-1"], "--grad-clip must be at least 0"),
    (["--limit-train", "0"], "--limit-train must be at least 1"),
    (["--eval-batch-size", "0"], "--eval-batch-size must be at least 1"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--val-fraction", "0"], "--val-fraction must be above 0"),
    (["--threads", "-1"], "--threads must be at least 1"),
    (["--max-steps", "0"], "--max-steps must not be 0"),
])
def test_out_of_range_options_are_one_line_errors(args, needle, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "classify", "--model", str(tmp_path), "--train", "x", "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_config_file_values_are_range_checked(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("warmup = -0.5\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        main(["train", "classify", "--config", str(cfg)])
    assert exc.value.code == 2 and f"{cfg}: warmup must be at least 0" in capsys.readouterr().err

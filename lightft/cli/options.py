"""Turn `Options` fields into click options, and merge --config file values under command-line flags.

Which flags a command shows comes from the option metadata (lightft/options.py): `train TASK` shows
the common groups plus TASK's own, `eval` / `predict` the fields marked for evaluation.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable, Iterable, Optional

import click

from lightft.errors import LightftError
from lightft.options import GROUPS, Options, check_range, flag, group_of, groups_for, read_config_file

# The task names (the registry in lightft/train/registry.py maps them to classes; a test keeps both equal).
# Kept here as plain strings so that building the CLI never imports torch.
TASK_NAMES = ("classify", "ner", "qa", "mlm", "lm", "instruct")
PAIR_SUFFIX = "__pair_off"  # click destination of the second flag of a --lora/--full pair


def _click_type(f: dataclasses.Field) -> Any:
    if "choices" in f.metadata:
        return click.Choice(f.metadata["choices"])
    hint = typing.get_type_hints(Options)[f.name]
    base = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return {int: int, float: float, str: str, bool: bool}.get(base[0], str)


def task_fields(task: Optional[str]) -> list[str]:
    """Every option that applies to `task` (all of them for None), in --help order."""
    return [f.name for g in groups_for(task) for f in g.own_fields()]


def option_decorators(names: Optional[Iterable[str]] = None, skip: tuple[str, ...] = ()) -> Callable:
    """Decorator adding a --flag per Options field (all of them, or `names`), labelled with its group."""
    wanted = None if names is None else set(names)
    chosen = [f for g in GROUPS for f in g.own_fields()
              if (wanted is None or f.name in wanted) and f.name not in skip]

    def decorate(fn: Callable) -> Callable:
        for f in reversed(chosen):
            help_text = f"[{group_of(f.name).group}] {f.metadata.get('help', '')}"
            if _click_type(f) is bool:
                on = flag(f.name)
                pair = f.metadata.get("flag_pair")
                off = "--" + (pair or "no-" + f.name.replace("_", "-"))
                # two separate flags, so that giving both (--lora --full) is an error, not "the last wins";
                # a plain --no-X stays out of the listing (the help of --X names it)
                fn = click.option(off, f.name + PAIR_SUFFIX, is_flag=True, default=False, hidden=not pair,
                                  help=f"[{group_of(f.name).group}] The opposite of {on}.")(fn)
                shown = "per task" if f.default is None else (on if f.default else off)
                fn = click.option(on, f.name, is_flag=True, default=False,
                                  help=f"{help_text} [default: {shown}]")(fn)
            else:
                shown = "" if f.default is None else f" [default: {f.default}]"
                fn = click.option(flag(f.name), f.name, type=_click_type(f), default=None,
                                  help=f"{help_text}{shown}")(fn)
        return fn

    return decorate


def flag_values(cli_values: dict[str, Any]) -> dict[str, Any]:
    """Click's values with each on/off flag pair folded into its field (None when neither was given)."""
    out = {}
    for key, value in cli_values.items():
        if key.endswith(PAIR_SUFFIX):
            continue
        off = cli_values.get(key + PAIR_SUFFIX)
        if off is not None:  # a boolean field
            f = Options.__dataclass_fields__[key]
            off_flag = "--" + (f.metadata.get("flag_pair") or "no-" + key.replace("_", "-"))
            if value and off:
                raise LightftError(f"{flag(key)} and {off_flag} conflict; choose one")
            value = True if value else (False if off else None)
        out[key] = value
    return out


def resolve_options(cli_values: dict[str, Any], config_file: Optional[str] = None, **fixed: Any) -> Options:
    """Defaults < --config file < command-line flags < `fixed` (positional arguments)."""
    merged: dict[str, Any] = {}
    if config_file:
        merged.update(read_config_file(config_file))
    given = {k: v for k, v in flag_values(cli_values).items() if v is not None}
    for name, value in given.items():
        check_range(name, value, "command line")
    merged.update(given)
    merged.update({k: v for k, v in fixed.items() if v is not None})
    return Options.from_dict(merged)


class TaskGroup(click.Group):
    """A group whose subcommands are the tasks: an unknown one is named with the choices."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            raise click.UsageError(f"'{args[0]}' is not one of {', '.join(TASK_NAMES)}", ctx)
        return super().resolve_command(ctx, args)


def per_task_group(name: str, summary: str, make_command: Callable[[str], click.Command]) -> click.Group:
    """A click group with one subcommand per task, so each task's --help lists only its own options."""
    group = TaskGroup(name, help=f"{summary} `lightft {name} TASK --help` lists that task's options.")
    for task in TASK_NAMES:
        group.add_command(make_command(task))
    return group


def eval_command_options(task: str, model_help: str, data_help: str, out_flag: str, out_help: str) -> Callable:
    """The options `eval` and `predict` share: --model, --data, an output file, and the task's eval flags."""
    from lightft.options import eval_flags

    def decorate(fn: Callable) -> Callable:
        fn = option_decorators(eval_flags(task))(fn)
        fn = click.option(out_flag, type=click.Path(dir_okay=False), help=out_help)(fn)
        fn = click.option("--data", required=True, type=click.Path(dir_okay=True), help=data_help)(fn)
        return click.option("--model", required=True, help=model_help)(fn)

    return decorate

"""Turn `Options` fields into click options, and merge --config file values under command-line flags."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable, Optional

import click

from lightft.options import Options, read_config_file


def _click_type(f: dataclasses.Field) -> Any:
    if "choices" in f.metadata:
        return click.Choice(f.metadata["choices"])
    hint = typing.get_type_hints(Options)[f.name]
    base = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return {int: int, float: float, str: str, bool: bool}.get(base[0], str)


def option_decorators(names: Optional[list[str]] = None, skip: tuple[str, ...] = ()) -> Callable:
    """Decorator adding a --flag per Options field (all of them, or `names`)."""
    chosen = [f for f in dataclasses.fields(Options) if (names is None or f.name in names) and f.name not in skip]

    def decorate(fn: Callable) -> Callable:
        for f in reversed(chosen):
            flag = "--" + f.name.replace("_", "-")
            help_text = f.metadata.get("help", "")
            if _click_type(f) is bool:
                off = f.metadata.get("flag_pair") or "no-" + f.name.replace("_", "-")
                fn = click.option(f"{flag}/--{off}", f.name, default=None, help=help_text)(fn)
            else:
                fn = click.option(flag, f.name, type=_click_type(f), default=None,
                                  help=f"{help_text} [default: {f.default}]")(fn)
        return fn

    return decorate


def resolve_options(cli_values: dict[str, Any], config_file: Optional[str] = None, **fixed: Any) -> Options:
    """Defaults < --config file < command-line flags < `fixed` (positional arguments)."""
    merged: dict[str, Any] = {}
    if config_file:
        merged.update(read_config_file(config_file))
    merged.update({k: v for k, v in cli_values.items() if v is not None})
    merged.update({k: v for k, v in fixed.items() if v is not None})
    return Options.from_dict(merged)

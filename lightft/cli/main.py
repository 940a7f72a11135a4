"""`lightft` entry point: the click group, lazy command registration and one-line error reporting.

Commands live in their own modules (`lightft/cli/<name>.py`, each exposing `command`) and are
imported only when invoked, so `lightft --help` stays fast and a broken optional dependency only
affects its own command.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from lightft import __version__
from lightft.errors import LightftError

# command name -> module under lightft.cli that defines `command`
COMMANDS = {
    "convert": "convert",
    "inspect": "inspect_cmd",
    "train": "train",
    "eval": "evaluate",
    "predict": "predict",
    "export": "export",
    "demo": "demo",
    "generate": "generate",
    "fewshot": "fewshot",
    "plot": "plot",
    "report": "report",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str):
        if name not in COMMANDS:
            return None
        return importlib.import_module(f"lightft.cli.{COMMANDS[name]}").command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lightft")
def cli() -> None:
    """lightft: fine-tune BERT, GPT-2 and Llama-family models with your own small trainer.

    \b
    Examples:
      lightft inspect path/to/model
      lightft convert gguf model.gguf out/model
      lightft train classify --model path/to/model --train train.csv --out runs/sst2
      lightft report runs/sst2
    """


class _DropAdverts(logging.Filter):
    """Lightning logs a sign-up tip for a cloud logger on every Trainer; it is noise in a CLI."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def _close_process_group() -> None:
    """Tear down a DDP process group once a command has succeeded.

    Without it a gloo process group is destroyed during interpreter shutdown, where its worker
    threads can abort the process ("terminate called without an active exception", exit -6) after
    the work is done. After a failure it is left alone: a collective shutdown could hang on ranks
    that are still waiting for the failed one.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors become one line on stderr and exit code 2, never a traceback."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch"):
        logging.getLogger(name).addFilter(_DropAdverts())
    try:
        cli.main(args=argv, prog_name="lightft", standalone_mode=False)
        _close_process_group()
    except LightftError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:  # one line, like every other error
        where = f"; see {e.ctx.command_path} --help" if e.ctx is not None else ""
        click.echo(f"error: {e.format_message()}{where}", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()

"""`lightft` entry point: the click group, lazy command registration, quiet logging and one-line errors.

Commands live in their own modules (`lightft/cli/<name>.py`, each exposing `command`) and are
imported only when invoked; `lightft --help` lists them from the table below without importing
any (torch and Lightning take seconds to import), so it stays fast, and a broken optional
dependency only affects its own command. tests/test_cli_fast.py keeps the table equal to the
commands' own first docstring lines.
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings

import click

from lightft import __version__
from lightft.errors import LightftError, escape_for_terminal

# command name -> (module under lightft.cli that defines `command`, the command's one-line help)
COMMANDS = {
    "convert": ("convert", "Convert a checkpoint from another format into a Hugging Face-layout folder lightft loads."),
    "demo": ("demo", "Fine-tune MiniLM on a small shipped sentiment set and print validation accuracy before and "
                     "after."),
    "eval": ("evaluate", "Evaluate a run or an export on a data file."),
    "export": ("export", "Export a trained run: merged weights (transformers-readable, with the task head), a PEFT "
                         "adapter, or a GGUF file."),
    "fewshot": ("fewshot", "Few-shot accuracy of MODEL on DATA for each number of --shots."),
    "generate": ("generate", "Continue PROMPT(s) with MODEL."),
    "inspect": ("inspect_cmd", "Summarise a checkpoint: family, layers, hidden size, heads, vocab, parameters, dtype, "
                               "files."),
    "models": ("models", "List the named models (--model minilm, --model smollm2): installed or not, folder, install "
                         "line."),
    "predict": ("predict", "JSONL predictions of a trained run or an export."),
    "train": ("train", "Fine-tune a model for TASK."),
    "plot": ("plot", "Draw loss, learning rate, tokens/s and the task metric against steps for RUNS, overlaid."),
    "report": ("report", "Write RUN/report.html: options, data statistics and token-length histograms, curves, final "
                         "metrics and sample predictions, with the figures embedded (no other file is needed to view "
                         "it)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str):
        if name not in COMMANDS:
            return None
        return importlib.import_module(f"lightft.cli.{COMMANDS[name][0]}").command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of `lightft --help`, from COMMANDS (importing no command module)."""
        limit = formatter.width - 6 - max(len(n) for n in COMMANDS)
        rows = [(name, click.utils.make_default_short_help(COMMANDS[name][1], limit)) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lightft")
@click.option("--verbose", is_flag=True, help="Also show Lightning's device banner and notices, and library warnings.")
def cli(verbose: bool) -> None:
    """lightft: fine-tune BERT, GPT-2 and Llama-family models with your own small trainer.

    --model takes a model folder, a run folder, or a name: minilm, smollm2 (see `lightft models`).

    \b
    Examples:
      lightft models
      lightft demo
      lightft inspect minilm
      lightft train classify --model minilm --train train.csv --out runs/sst2
      lightft --verbose train classify --model minilm --train train.csv --out runs/sst2
      lightft report runs/sst2
    """
    quiet_libraries(not verbose)


class _DropAdverts(logging.Filter):
    """Lightning logs a sign-up tip for a cloud logger on every Trainer; it is noise in a CLI."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


# Lightning's INFO lines (device banner "GPU available: ... / TPU available: ...", "Loading
# `train_dataloader` to estimate number of stepping batches.", "`Trainer.fit` stopped: ...") say
# nothing a lightft user acts on; its warnings stay. They come through `rank_zero_info`, whose
# loggers are named here: importing Lightning resets the level of its top loggers to INFO (and
# commands import it late), never that of these.
QUIET_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                 "lightning.fabric.utilities.rank_zero")
# Warnings about library internals the user cannot act on (they name Lightning's own arguments or
# torch's deprecations inside Lightning); lightft's own warnings are errors or [data]/[init] lines.
QUIET_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # torch pytree deprecation hit inside Lightning
    r"The number of training batches \(\d+\) is smaller than the logging interval",  # names Trainer(log_every_n_steps)
)


def quiet_libraries(quiet: bool = True) -> None:
    """Silence what `--verbose` shows (QUIET_LOGGERS, QUIET_WARNINGS), or show it again (quiet=False)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.INFO)
    if not quiet:
        warnings.simplefilter("default")
        return
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(torch|lightning|torchmetrics)(\.|$)")


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


def usage_line(e: click.UsageError) -> str:
    """click's message as one line, pointing at the command's --help ("Missing option '--data'. See ...")."""
    message = e.format_message().strip()
    if e.ctx is None:
        return message
    end = "" if message.endswith((".", "!", "?")) else "."
    return f"{message}{end} See '{e.ctx.command_path} --help'."


MESSAGE_LIMIT = 2000  # characters of one error line; messages quote data only as short excerpts


def fail(message: str, code: int) -> None:
    """Print `error: MESSAGE` as one escaped line on stderr (no file content reaches the terminal raw) and exit."""
    click.echo(f"error: {escape_for_terminal(message, MESSAGE_LIMIT)}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors become one line on stderr and exit code 2, never a traceback."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch"):
        logging.getLogger(name).addFilter(_DropAdverts())
    try:
        cli.main(args=argv, prog_name="lightft", standalone_mode=False)
        _close_process_group()
    except LightftError as e:  # exit_code: a training stopped by a signal exits 128 + its number (143, 130)
        fail(str(e), getattr(e, "exit_code", 2))
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:  # one line, like every other error
        fail(usage_line(e), e.exit_code)
    except click.ClickException as e:
        fail(e.format_message(), e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as e:  # the machine said no (permission, disk full, read-only folder): name the file
        fail(os_error_message(e), 1)


def os_error_message(e: OSError) -> str:
    """`FILE: reason` of an operating-system error (no traceback: it is about the machine, not lightft)."""
    names = [str(n) for n in (e.filename, e.filename2) if n is not None]
    reason = e.strerror or str(e) or type(e).__name__
    return f"{' -> '.join(names)}: {reason}" if names else f"{type(e).__name__}: {reason}"


if __name__ == "__main__":
    main()

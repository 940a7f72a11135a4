"""`lightft report RUN`: write RUN/report.html, one self-contained page about the run."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--samples/--no-samples", default=True,
              help="Include the sample predictions (--no-samples: share the page without the data's text).")
def command(run: str, samples: bool) -> None:
    """Write RUN/report.html: options, data statistics and token-length histograms, curves, final
    metrics and sample predictions, with the figures embedded (no other file is needed to view it).

    \b
    Example:
      lightft report runs/sst2 && xdg-open runs/sst2/report.html
    """
    from lightft.report.html import write_report

    click.echo(str(write_report(run, with_samples=samples)))

"""See a run: curves, data statistics and sample predictions drawn from a run folder's files alone.

`runfiles` reads what training left in the folder (run.json, metrics.json, logs/metrics.csv,
samples.json) with the standard library only; `plot` (curves, several runs overlaid) and `html`
(one self-contained report.html) draw them with matplotlib, the optional `plot` extra. Nothing here
imports Lightning or a model: a report can be made on a machine that only holds the folder.
"""

from lightft.report.runfiles import RunFiles, read_run_files  # noqa: F401

"""`RUN/report.html`: one self-contained page about a run (options, data, curves, metrics, samples).

Self-contained means no request leaves the file: the CSS is inline and the figures are PNGs in
`data:` URIs, so the page can be mailed, archived or opened offline. Every text taken from the run
(file names, options, sample texts) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Iterable, Optional

from lightft.checkpoint import write_atomic
from lightft.report.plot import curves_figure, lengths_figure, png_bytes
from lightft.report.runfiles import RunFiles, read_run_files

REPORT_FILE = "report.html"

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1180px;
       padding: 0 1em; color: #1d2330; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #dde; }
.sub { color: #5a6272; } table { border-collapse: collapse; margin: .5em 0; }
td, th { border: 1px solid #dde; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f5f9; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; } .changed { font-weight: 600; } .dim { color: #8a90a0; }
.grid { columns: 3 320px; } .grid table { break-inside: avoid; width: 100%; }
td.text { max-width: 560px; white-space: pre-wrap; word-break: break-word; }
.ok { color: #1a7f37; } .bad { color: #b42318; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return _e(value)


def _td(value: Any, cls: str = "") -> str:
    """One escaped cell; numbers right-aligned."""
    if not cls and isinstance(value, (int, float)) and not isinstance(value, bool):
        cls = "num"
    return f"<td class='{cls}'>{_num(value)}</td>" if cls else f"<td>{_num(value)}</td>"


def _table(rows: Iterable[Iterable[str]], header: Optional[tuple[str, ...]] = None) -> str:
    """Rows of cells made by `_td` (already escaped)."""
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _image(fig, alt: str) -> str:
    data = base64.b64encode(png_bytes(fig)).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _metrics_section(run: RunFiles) -> str:
    if run.metrics is None:
        last = [(k, v[-1][1], v[-1][0]) for k, v in run.log.items() if k.startswith(("val_", "train_loss"))]
        note = "<p class='bad'>The run has not finished (no metrics.json): last logged values.</p>"
        return note + _table(((_td(k), _td(v), _td(step)) for k, v, step in last), ("metric", "value", "step"))
    rows = sorted(run.metrics.items(), key=lambda kv: (not kv[0].startswith("val_"), kv[0]))
    return _table(((_td(k), _td(v)) for k, v in rows), ("metric", "value"))


def _data_section(run: RunFiles) -> str:
    data = run.info.get("data") or {}
    tables = []
    for split, stats in data.items():
        if not isinstance(stats, dict):
            continue
        rows = [(k, v) for k, v in stats.items() if not isinstance(v, (dict, list))]
        lengths = stats.get("lengths") or {}
        if lengths.get("n"):
            rows += [("examples used", lengths["n"]), ("tokens: mean / median / p95 / max",
                      f"{lengths['mean']} / {lengths['p50']} / {lengths['p95']} / {lengths['max']}"),
                     ("--max-length", lengths["limit"])]
        tables.append(f"<table><tr><th colspan=2>{_e(split)}</th></tr>"
                      + "".join(f"<tr>{_td(k)}{_td(v, 'num')}</tr>" for k, v in rows) + "</table>")
    if not tables:
        return "<p class='dim'>run.json holds no data statistics.</p>"
    fig = lengths_figure(data)
    hist = _image(fig, "token length histograms") if fig is not None else \
        "<p class='dim'>No token-length histograms (the run predates them).</p>"
    return f"<div class='grid'>{''.join(tables)}</div>{hist}"


def _samples_section(run: RunFiles, with_samples: bool) -> str:
    if not with_samples:
        return "<p class='dim'>Left out of this page (<code>lightft report --no-samples</code>).</p>"
    samples = (run.samples or {}).get("samples") or []
    if not samples:
        return "<p class='dim'>No samples.json (written at the end of training).</p>"
    what = _e((run.samples or {}).get("what", ""))
    rows = []
    for s in samples:
        mark = {True: _td("✓", "ok"), False: _td("✗", "bad")}.get(s.get("correct"), _td(""))
        rows.append((_td(s.get("input", ""), "text"), _td(s.get("gold", ""), "text"),
                     _td(s.get("predicted", ""), "text"), mark))
    return f"<p class='sub'>{what}</p>" + _table(rows, ("input", "gold", "predicted", ""))


def _options_section(run: RunFiles) -> str:
    """The run's options by group (lightft/options.py), those of other tasks left out; set ones in bold."""
    from lightft.options import GROUPS, Options, groups_for  # plain dataclasses: defaults and groups

    options = run.info.get("options") or {}
    defaults = Options().to_dict()
    applies = {g.group for g in groups_for(run.task)}
    groups: dict[str, list[tuple[str, Any]]] = {g.group: [] for g in GROUPS if g.group in applies}
    unknown = "(not an option of this lightft version)"
    for name, value in options.items():
        owner = next((g.group for g in GROUPS if any(f.name == name for f in g.own_fields())), unknown)
        if owner in groups or owner == unknown:
            groups.setdefault(owner, []).append((name, value))
    tables = []
    for group, items in groups.items():
        per_table = -(-len(items) // 2) if len(items) > 16 else len(items)  # a long group: two tables side by side
        for start in range(0, len(items), per_table):
            cells = []
            for name, value in items[start : start + per_table]:
                changed = name not in defaults or value != defaults[name]
                cells.append(f"<tr>{_td(name)}{_td(value, 'changed' if changed else 'dim')}</tr>")
            title = group if start == 0 else f"{group} (continued)"
            tables.append(f"<table><tr><th colspan=2>{_e(title)}</th></tr>{''.join(cells)}</table>")
    return ("<p class='sub'>Bold: set for this run; grey: the default. Options of other tasks are left out.</p>"
            "<div class='grid'>" + "".join(tables) + "</div>")


def render_report(run: RunFiles, with_samples: bool = True) -> str:
    info = run.info
    facts = [f"task <b>{_e(run.task)}</b>", f"base model {_e(info.get('base_model', '?'))}",
             f"created {_e(info.get('created', '?'))}", f"lightft {_e(info.get('lightft_version', '?'))}"]
    if info.get("resumed"):
        facts.append(f"resumed {_e(info['resumed'])}")
    curves = _image(curves_figure([run]), "training curves")
    read = [run.path / "run.json", *run.log_files] + [run.path / f for f in ("metrics.json", "samples.json")
                                                     if (run.path / f).is_file()]
    sources = ", ".join(_e(p.relative_to(run.path)) for p in read)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>lightft run {_e(run.name)}</title><style>{CSS}</style></head>
<body>
<h1>lightft run: {_e(run.name)}</h1>
<p class="sub">{' · '.join(facts)}</p>
<h2>Final metrics</h2>
{_metrics_section(run)}
<h2>Curves</h2>
{curves}
<h2>Data</h2>
{_data_section(run)}
<h2>Samples</h2>
{_samples_section(run, with_samples)}
<h2>Options</h2>
{_options_section(run)}
<p class="dim">Made by <code>lightft report</code> from {sources}.</p>
</body></html>
"""


def write_report(run_dir: str | Path, with_samples: bool = True) -> Path:
    """Write RUN/report.html (through a temporary file, so a reader never sees half a page).

    `with_samples=False` leaves the sample texts out: a page to share without the data's text.
    """
    run = read_run_files(run_dir)
    page = render_report(run, with_samples)
    out = run.path / REPORT_FILE
    write_atomic(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return out

"""See a run: `lightft plot`, `lightft report`, the files training leaves for them, `--logger tensorboard`."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from lightft.cli.main import cli
from lightft.errors import LightftError
from lightft.report.lengths import length_summary
from lightft.report.runfiles import merge_parts, read_run_files
from tiny_run import make_tiny_model, write_classify_jsonl

pytest.importorskip("matplotlib")


def _invoke(args: list[str]):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One tiny classify run with both loggers (12 steps, logged every 2, validated every 4)."""
    tmp = tmp_path_factory.mktemp("report")
    model = make_tiny_model(tmp / "bert")
    train, val = write_classify_jsonl(tmp / "train.jsonl", 96), write_classify_jsonl(tmp / "val.jsonl", 24, seed=1)
    out = tmp / "run"
    result = _invoke(["train", "classify", "--model", model, "--train", train, "--val", val, "--out", out,
                      "--max-steps", 12, "--batch-size", 8, "--log-every", 2, "--val-every", 4, "--no-progress",
                      "--no-cache", "--logger", "tensorboard", "--lr", "1e-3"])
    assert result.exit_code == 0, result.output
    return out


class _Images(HTMLParser):
    """Every <img src> of a page, and every attribute that could fetch something from elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for key in ("src", "href"):
            if attrs.get(key) and not attrs[key].startswith("data:"):
                self.external.append(f"<{tag} {key}={attrs[key]}>")


def test_training_leaves_samples_lengths_and_a_self_contained_report(run):
    info = json.loads((run / "run.json").read_text())
    lengths = info["data"]["train"]["lengths"]
    assert lengths["n"] == 96 and sum(lengths["counts"]) == 96 and lengths["limit"] == 256
    samples = json.loads((run / "samples.json").read_text())["samples"]
    assert len(samples) == 6 and {s["gold"] for s in samples} <= {"pos", "neg"}
    assert all(s["predicted"].split()[0] in ("pos", "neg") and isinstance(s["correct"], bool) for s in samples)

    page = (run / "report.html").read_text(encoding="utf-8")
    parser = _Images()
    parser.feed(page)
    assert parser.external == [] and "<script" not in page and "<link" not in page  # nothing fetched from elsewhere
    assert len(parser.images) == 2  # the curves and the token-length histograms
    from matplotlib.image import imread

    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        pixels = imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 300  # decodes to a real picture
    assert "val_accuracy" in page and "Samples" in page and "lora_r" in page


def test_tensorboard_event_files_hold_the_logged_scalars(run):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = event_accumulator.EventAccumulator(str(run / "logs" / "tensorboard"))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"train_loss", "val_loss", "val_accuracy", "tok_s"} <= scalars
    with open(run / "logs" / "metrics.csv", newline="") as f:
        csv_loss = {int(r["step"]): float(r["train_loss"]) for r in csv.DictReader(f) if r["train_loss"]}
    tb_loss = {e.step: e.value for e in acc.Scalars("train_loss")}
    assert sorted(tb_loss) == sorted(csv_loss) == [1, 3, 5, 7, 9, 11]
    assert tb_loss == pytest.approx(csv_loss, rel=1e-6)  # the same values, two formats


def test_plot_one_and_several_runs(run, tmp_path):
    result = _invoke(["plot", run])
    assert result.exit_code == 0 and (run / "curves.png").is_file()
    out = tmp_path / "both.png"
    result = _invoke(["plot", run, run, "--out", out, "--metric", "val_macro_f1"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < out.stat().st_size < 200_000


def test_report_command_rewrites_the_page(run):
    before = (run / "report.html").stat().st_mtime_ns
    result = _invoke(["report", run])
    assert result.exit_code == 0 and result.output.strip() == str(run / "report.html")
    assert (run / "report.html").stat().st_mtime_ns >= before
    assert _invoke(["report", run, "--no-samples"]).exit_code == 0
    page = (run / "report.html").read_text(encoding="utf-8")
    sample = json.loads((run / "samples.json").read_text())["samples"][0]["input"]
    assert "--no-samples" in page and sample not in page


def test_bad_inputs_are_one_line(run, tmp_path):
    with pytest.raises(LightftError, match="not a run folder"):
        read_run_files(tmp_path)
    with pytest.raises(LightftError, match="no such folder"):
        read_run_files(tmp_path / "missing")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "run.json").write_text(json.dumps({"task": "classify", "options": {}}))
    with pytest.raises(LightftError, match=r"no logged steps yet .*metrics\.csv is missing"):
        read_run_files(fresh)
    (fresh / "logs").mkdir()
    (fresh / "logs" / "metrics.csv").write_text("epoch,step,train_loss\n")
    with pytest.raises(LightftError, match="no logged steps yet .*has no rows"):
        read_run_files(fresh)
    for args, message in [(["plot", run, "--metric", "val_acc"], "unknown metric 'val_acc'.*val_accuracy"),
                          (["plot", tmp_path], "not a run folder"),
                          (["report", fresh], "no logged steps yet"),
                          (["plot", run, "--out", tmp_path / "curves.jpg"], "ending in .png")]:
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert isinstance(result.exception, LightftError) and re.search(message, str(result.exception)), args
        assert "\n" not in str(result.exception)


def test_resumed_logs_join_with_the_later_part_winning():
    first = {"train_loss": [(1, 0.9), (3, 0.8), (5, 0.7)]}
    second = {"train_loss": [(3, 0.75), (5, 0.65), (7, 0.6)]}  # resumed from the checkpoint at step 3
    assert merge_parts([first, second]) == {"train_loss": [(1, 0.9), (3, 0.75), (5, 0.65), (7, 0.6)]}


def test_length_summary_counts_every_example():
    lengths = [3, 5, 5, 8, 40, 41]
    s = length_summary(lengths, limit=32, bins=4)
    assert s["counts"] == [4, 0, 0, 2] and s["edges"] == [0, 11, 22, 33, 44] and s["max"] == 41
    assert (s["p50"], s["p95"], s["n"]) == (8, 41, 6)

"""Helpers for end-to-end CLI tests: a tiny random BERT folder with a word-level tokenizer, a tiny
classification data set, and running `python -m lightft` in a subprocess with this worktree's code."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORDS = ["good", "bad", "great", "awful", "fine", "movie", "plot", "actor", "boring", "fun", "the", "a", "was",
         "is", "very", "not", "really", "story", "music", "end"]


def make_tiny_model(path: Path, family: str = "bert", **overrides) -> Path:
    """A tiny random HF model folder (transformers as the test-time oracle) + a word-level tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from tests.conftest import save_hf, tiny_hf_model

    save_hf(tiny_hf_model(family, **overrides), path)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
         "mask_token": "[MASK]"}), encoding="utf-8")
    return path


def write_classify_jsonl(path: Path, n: int, seed: int = 0) -> Path:
    """`n` records {"text", "label"}: the label is whether 'good'-like words outnumber 'bad'-like ones."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
        score = sum(w in ("good", "great", "fine", "fun") for w in words) - sum(w in ("bad", "awful", "boring")
                                                                            for w in words)
        lines.append(json.dumps({"text": " ".join(words), "label": "pos" if score >= 0 else "neg"}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_cli(args: list[str], cache: Path, timeout: float = 120, prefix: tuple[str, ...] | list[str] = ("-m", "lightft"),
            **popen) -> subprocess.CompletedProcess:
    """`python -m lightft ARGS` (or `python PREFIX ARGS`) with this worktree first on PYTHONPATH and a
    private token cache."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "LIGHTFT_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "PYTHONHASHSEED": "0"}
    return subprocess.run([sys.executable, *prefix, *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=popen.pop("cwd", REPO), **popen)



def lora_available() -> bool:
    """True once the lightft.lora package is present (an interim placeholder module supported --full only)."""
    return importlib.util.find_spec("lightft.lora") is not None and \
        importlib.util.find_spec("lightft.lora").submodule_search_locations is not None


needs_lora = pytest.mark.skipif(not lora_available(), reason="lightft.lora is not on this branch yet")


# The real CLI for a subprocess, each training step slowed down so that a kill or signal lands mid-run
# (tests/test_resume.py, tests/test_signals.py).
SLOW_CLI = """
import sys, time
import lightft.tasks.module as m
step = m.TaskModule.training_step
def slow(self, batch, batch_idx):
    time.sleep(0.05)
    return step(self, batch, batch_idx)
m.TaskModule.training_step = slow
from lightft.cli.main import main
main(sys.argv[1:])
"""


def run_in_process(args: list[str], cache: Path, monkeypatch) -> None:
    """The CLI in this process with its own cache folder; torch's thread count is put back after
    (--threads changes it for the whole process)."""
    import torch

    from lightft.cli.main import main

    monkeypatch.setenv("LIGHTFT_CACHE", str(cache))
    threads = torch.get_num_threads()
    try:
        main(args)
    finally:
        torch.set_num_threads(threads)

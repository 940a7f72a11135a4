"""What the strict-input and bounded-resource mechanisms accept and keep: the other side of the bad-input corpus.

Lines end at `\\n` only; a quoted CSV line break stays whitespace; the token cache follows file
contents, not timestamps; escaping keeps printable text; aliases, templates and positions within
their limits work as before; a full disk keeps the old file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest

from lightft.errors import LightftError, escape_for_terminal, excerpt
from lightft.options import Options


def classify_dm(tmp_path: Path, train: Path, cache: bool = False):
    from lightft.data.classify import ClassificationDataModule
    from lightft.tokenizer import load_tokenizer
    from tests.tiny_run import make_tiny_model

    model = tmp_path / "m"
    if not model.exists():
        make_tiny_model(model)
    return ClassificationDataModule(load_tokenizer(model), Options(cache=cache, val_fraction=0.0), train_file=str(train))


def test_jsonl_lines_end_at_newline_only(tmp_path):
    from lightft.data.readers import iter_jsonl

    texts = ["good\u2028movie", "bad\u0085plot", "fine\x0cfilm\x1c"]  # all str.splitlines() separators
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\r\n" for t in texts), encoding="utf-8")
    assert [(n, r["text"]) for n, r in iter_jsonl(path)] == [(1, texts[0]), (2, texts[1]), (3, texts[2])]


def test_text_documents_keep_unicode_separators(tmp_path):
    from lightft.data.mlm import read_documents

    path = tmp_path / "docs.txt"
    path.write_text("first\u2028still first\nsecond\u0085still second\n", encoding="utf-8")
    assert read_documents(path, "text") == [(1, "first\u2028still first"), (2, "second\u0085still second")]


def test_quoted_line_break_in_csv_keeps_words_apart(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text('text,label\n"good\nmovie",pos\nbad plot,neg\n', encoding="utf-8")
    dm = classify_dm(tmp_path, path)
    dm.setup("fit")
    tok = dm.tokenizer
    first = dm.datasets["train"][0]
    assert first["line"] == 2 and first["input_ids"][1:3] == [tok.backend.token_to_id("good"),
                                                              tok.backend.token_to_id("movie")]
    assert dm.datasets["train"][1]["line"] == 4  # the next record names the line it starts on
    assert "1 records span several lines through quoted line breaks (first at line 2)" in capsys.readouterr().err


def test_token_cache_sees_a_same_size_rewrite_with_the_old_mtime(tmp_path, monkeypatch):
    """Path + size + mtime would reuse stale tokens here; the content hash does not."""
    monkeypatch.setenv("LIGHTFT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "t.jsonl"
    rows = [{"text": "good movie", "label": "pos"}, {"text": "bad plot", "label": "neg"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    stat = path.stat()
    first = classify_dm(tmp_path, path, cache=True)
    first.setup("fit")
    assert [e["label"] for e in first.datasets["train"]] == ["pos", "neg"]
    swapped = [{"text": "good movie", "label": "neg"}, {"text": "bad plot", "label": "pos"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in swapped), encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    second = classify_dm(tmp_path, path, cache=True)
    second.setup("fit")
    assert [e["label"] for e in second.datasets["train"]] == ["neg", "pos"]
    assert len(list((tmp_path / "cache" / "tokens").glob("*.pt"))) == 2


def test_file_digest_is_the_streamed_sha256(tmp_path):
    from lightft.data.cache import DIGEST_CHUNK, file_digest

    blob = os.urandom(3 * DIGEST_CHUNK + 17)  # several chunks and a partial one
    path = tmp_path / "big.bin"
    path.write_bytes(blob)
    assert file_digest(path) == hashlib.sha256(blob).hexdigest()
    with pytest.raises(LightftError, match="nope.bin: file not found"):
        file_digest(tmp_path / "nope.bin")


@pytest.mark.parametrize("raw, shown", [
    ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    ("line one\nerror: forged\rback", "line one\\nerror: forged\\rback"),
    ("abc\u202edcba", "abc\\u202edcba"),  # right-to-left override
    ("zero\u200bwidth\u2028sep", "zero\\u200bwidth\\u2028sep"),
    ("c1 \x9b csi", "c1 \\x9b csi"),
    ("café 東京 C:\\data\\x.csv", "café 東京 C:\\data\\x.csv"),  # printable text and backslashes stay as they are
])
def test_escape_for_terminal(raw, shown):
    assert escape_for_terminal(raw) == shown


def test_excerpt_is_short_quoted_and_escaped():
    assert excerpt("x" * 500, 20) == "'" + "x" * 19 + "…'"
    assert excerpt(["a\x1b"]) == "['a\\x1b']"
    assert len(escape_for_terminal("\x00" * 10_000_000, 100)) == 100  # never escapes megabytes to cut them


@pytest.mark.parametrize("family, overrides, longest", [
    ("bert", {"max_position_embeddings": 64}, 64),
    ("roberta", {"max_position_embeddings": 70, "pad_token_id": 1}, 68),  # positions start at padding_idx + 1
    ("llama", {"max_position_embeddings": 128}, 128),
])
def test_check_max_length(hf_folder, family, overrides, longest):
    from lightft.checkpoint import read_model_config
    from lightft.config import check_max_length

    _, folder = hf_folder(family, **overrides)
    cfg = read_model_config(folder)
    check_max_length(cfg, longest)
    with pytest.raises(LightftError, match=rf"--max-length {longest + 1} is longer than the model can take: .* "
                                           rf"allow {longest} tokens; use --max-length {longest} or less"):
        check_max_length(cfg, longest + 1)


def test_real_model_configs_pass_the_checks(hf_folder):
    """Every family's tiny config (transformers' own defaults) passes; GQA and explicit head_dim too."""
    from lightft.checkpoint import load_model

    for family, kw in [("bert", {}), ("roberta", {}), ("gpt2", {}), ("llama", {"num_key_value_heads": 2}),
                       ("qwen2", {}), ("llama", {"head_dim": 16})]:
        _, folder = hf_folder(family, **kw)
        assert load_model(folder).cfg.num_layers == 2


def test_hub_cache_links_are_copied_other_links_refused(tmp_path):
    """A Hugging Face hub snapshot links its files into ../../blobs; that stays inside the repository."""
    from lightft.model_files import real_file_inside

    repo = tmp_path / "models--org--name"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (repo / "blobs" / "f00d").write_text("[PAD]\n", encoding="utf-8")
    (snapshot / "vocab.txt").symlink_to(Path("../../blobs/f00d"))
    assert real_file_inside(snapshot, "vocab.txt") == snapshot / "vocab.txt"
    assert real_file_inside(snapshot, "merges.txt") is None
    (tmp_path / "secret").write_text("key", encoding="utf-8")
    (snapshot / "merges.txt").symlink_to(tmp_path / "secret")
    with pytest.raises(LightftError, match="merges.txt: is a symbolic link to a file outside the model folder"):
        real_file_inside(snapshot, "merges.txt")


def test_yaml_aliases_within_the_limit_load(tmp_path):
    from lightft.safe_config import load_yaml

    assert load_yaml("train: &t data.jsonl\nval: *t\nlora_targets: q,v\n", "c.yaml") == {
        "train": "data.jsonl", "val": "data.jsonl", "lora_targets": "q,v"}


def test_budgeted_template_renders_like_the_plain_sandbox():
    """Loops (loop.last, namespace), filters, format and ~ give the same text as Jinja's own sandbox."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from lightft.chat_template import ChatTemplate

    source = ("{% set ns = namespace(sys='') %}{% for m in messages %}{% if m.role == 'system' %}"
              "{% set ns.sys = m.content|trim %}{% else %}<|{{ m['role'] }}|>{{ m.content ~ '' }}"
              "{{ '%s' % eos_token }}{% if not loop.last %}\n{% endif %}{% endif %}{% endfor %}"
              "{{ '{}:{}'.format(ns.sys, messages|length) }}{{ messages|map(attribute='role')|join(',') }}"
              "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    variables = {"messages": [{"role": "system", "content": " be brief "}, {"role": "user", "content": "hi"},
                              {"role": "assistant", "content": "yo"}],
                 "add_generation_prompt": True, "eos_token": "</s>", "bos_token": "<s>"}
    plain = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(source).render(**variables)
    assert ChatTemplate(source, "m").render(**variables) == plain


def test_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    """write_atomic: the error names the file, the old content stays, no temporary file is left (checkpoints:
    tests/test_checkpointing.py)."""
    from lightft.checkpoint import write_atomic_json

    path = tmp_path / "metrics.json"
    write_atomic_json(path, {"old": 1})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(json, "dump", full)
    with pytest.raises(LightftError, match=r"metrics.json: cannot write \(No space left on device\); nothing was"):
        write_atomic_json(path, {"new": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"old": 1} and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_really_full_disk_is_one_line(tmp_path, capsys):
    """The same on a 1 MiB tmpfs (needs root and mount; skipped elsewhere): safetensors reports a full disk
    as its own error type, which must not escape as a traceback; nor may a checkpoint that does not fit."""
    import subprocess

    import torch
    from safetensors.torch import load_file

    from lightft.checkpoint import write_atomic_safetensors
    from lightft.cli.main import main
    from tests.bad_cases import check_error_output
    from tests.tiny_run import make_tiny_model, write_classify_jsonl

    small = tmp_path / "small"
    small.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and tmpfs to fill a disk for real")
    try:
        write_atomic_safetensors(small / "w.safetensors", {"a": torch.zeros(10)})
        with pytest.raises(LightftError, match=r"w.safetensors: cannot write \(.*No space left on device"):
            write_atomic_safetensors(small / "w.safetensors", {"a": torch.zeros(1_000_000)})
        assert [p.name for p in small.iterdir()] == ["w.safetensors"]  # the old file, no temporary one
        assert torch.equal(load_file(str(small / "w.safetensors"))["a"], torch.zeros(10))
        (small / "w.safetensors").unlink()
        free = os.statvfs(small).f_bavail * os.statvfs(small).f_frsize
        (small / "filler").write_bytes(b"\0" * (free - 200_000))  # room for run.json and logs, not a checkpoint
        model = make_tiny_model(tmp_path / "model")
        data = write_classify_jsonl(tmp_path / "train.jsonl", 16)
        with pytest.raises(SystemExit) as exit_info:  # training whose checkpoint does not fit
            main(["train", "classify", "--model", str(model), "--train", str(data), "--out", str(small / "run"),
                  "--full", "--max-steps", "2", "--no-progress", "--no-cache"])
        check_error_output(exit_info.value.code, capsys.readouterr().err, "cannot write (No space left on device)")
        assert not [p for p in small.rglob("*.tmp-*")], "temporary file left behind"
    finally:
        subprocess.run(["umount", str(small)], check=False)

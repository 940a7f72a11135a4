"""On-disk cache of tokenised datasets, so a second run with the same inputs does not re-tokenise.

A dataset is a list of examples; each example a dict of ints, strings or lists of ints. The cache
stores each list field as one flat int tensor + lengths (safe to load with `weights_only=True`),
keyed by a hash of the source files' contents (streamed sha256), the tokenizer and every option that
changes the result.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Union

import torch

from lightft.checkpoint import write_atomic
from lightft.errors import LightftError
from lightft.named_models import cache_root

Example = dict[str, Any]


def cache_dir() -> Path:
    return cache_root() / "tokens"


DIGEST_CHUNK = 1 << 20  # bytes hashed at a time: memory stays flat for a file of any size


def file_digest(path: Union[str, os.PathLike]) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks: the data identity a cache entry and a run record.

    An unreadable file is a one-line error naming it (the same the readers give).
    """
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(DIGEST_CHUNK):
                h.update(chunk)
    except FileNotFoundError:
        raise LightftError(f"{path}: file not found") from None
    except OSError as e:
        raise LightftError(f"{path}: cannot read the file ({e.strerror or type(e).__name__}); "
                           "check its permissions") from None
    return h.hexdigest()


def fingerprint(files: Iterable[Path], options: dict[str, Any]) -> str:
    """Hash of the files' contents (and names: a file's place in a folder can matter) plus options.

    Content, not path + size + mtime: a file rewritten with the same size within the clock's
    resolution, or with its mtime restored (`cp -p`, `touch -r`, a git checkout), must not reuse
    stale tokens. Hashing is streamed, and costs one read of the data per run.
    """
    h = hashlib.sha256()
    for f in files:
        h.update(f"{Path(f).name}|{file_digest(f)}|".encode())
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def _pack(examples: list[Example]) -> dict[str, Any]:
    packed: dict[str, Any] = {"n": len(examples), "fields": {}}
    if not examples:
        return packed
    for key in examples[0]:
        values = [e[key] for e in examples]
        if isinstance(values[0], (list, tuple)):
            flat = [x for v in values for x in v]
            is_float = any(isinstance(x, float) for x in flat)
            packed["fields"][key] = {
                "kind": "list",
                "data": torch.tensor(flat, dtype=torch.float32 if is_float else torch.long),
                "lengths": torch.tensor([len(v) for v in values], dtype=torch.long),
            }
        elif isinstance(values[0], str) or values[0] is None:
            packed["fields"][key] = {"kind": "str", "data": json.dumps(values)}
        else:
            packed["fields"][key] = {"kind": "scalar", "data": torch.tensor(values)}
    return packed


def _unpack(packed: dict[str, Any]) -> list[Example]:
    n = packed["n"]
    columns: dict[str, list] = {}
    for key, f in packed["fields"].items():
        if f["kind"] == "list":
            columns[key] = [t.tolist() for t in torch.split(f["data"], f["lengths"].tolist())]
        elif f["kind"] == "str":
            columns[key] = json.loads(f["data"])
        else:
            columns[key] = f["data"].tolist()
    return [{k: columns[k][i] for k in columns} for i in range(n)]


def cached(key: str, build: Callable[[], tuple[list[Example], dict[str, Any]]],
           enabled: bool = True) -> tuple[list[Example], dict[str, Any], bool]:
    """(examples, stats, hit): load `key` from the cache, or build, store atomically and return."""
    path = cache_dir() / f"{key}.pt"
    if enabled and path.is_file():
        try:
            blob = torch.load(path, weights_only=True)
            return _unpack(blob["examples"]), json.loads(blob["stats"]), True
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            path.unlink(missing_ok=True)
    examples, stats = build()
    if enabled:
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {"examples": _pack(examples), "stats": json.dumps(stats)}
        write_atomic(path, lambda tmp: torch.save(blob, tmp))
    return examples, stats, False


def maybe_cached(enabled: bool, files: list[Path], options: dict[str, Any],
                 build: Callable[[], tuple[list[Example], dict[str, Any]]]) -> tuple[list[Example], dict, bool]:
    key = fingerprint(files, options) if enabled else ""
    return cached(key, build, enabled) if enabled else (*build(), False)




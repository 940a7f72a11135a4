"""The identity of a run's data: the sha256 of every file it trained on, recorded in run.json, so that
`--resume` cannot continue a run on other data than it started with without saying so.

A resume reads the files again and compares; a file changed, added or gone is refused, naming it,
unless `--allow-data-change`. Hashes are of the bytes (streamed, 1 MiB at a time: `file_digest` of
lightft/data/cache.py, which keys the token cache the same way), so a same-size rewrite or a restored
mtime is still seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from lightft.data.cache import file_digest  # the same streamed sha256 that keys the token cache
from lightft.errors import LightftError


def data_hashes(files: dict[str, Iterable[Path]]) -> dict[str, dict[str, str]]:
    """{split: {file: "sha256:HEX"}} for the files each split reads."""
    return {split: {str(p): "sha256:" + file_digest(p) for p in paths} for split, paths in files.items()}


def data_changes(saved: dict[str, dict[str, str]], now: dict[str, dict[str, str]]) -> list[str]:
    """One phrase per difference: a file changed, added to or gone from a split (a folder of text files)."""
    changes = []
    for split in sorted(set(saved) | set(now)):
        before, after = saved.get(split, {}), now.get(split, {})
        for f in sorted(set(before) | set(after)):
            if f not in after:
                changes.append(f"{f} ({split}) is gone")
            elif f not in before:
                changes.append(f"{f} ({split}) is new")
            elif before[f] != after[f]:
                changes.append(f"{f} ({split}) changed since the run started "
                               f"({before[f].removeprefix('sha256:')[:12]} -> {after[f].removeprefix('sha256:')[:12]})")
    return changes


def check_same_data(info: dict[str, Any], now: dict[str, dict[str, str]], out: Path, allow: bool) -> list[str]:
    """Refuse a resume on changed data (naming the first file), unless `allow`; return the changes."""
    saved = info.get("data_files")
    if saved is None:  # a run from before data hashes were recorded: nothing to compare with
        return []
    changes = data_changes(saved, now)
    if changes and not allow:
        more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
        raise LightftError(f"{out}: --resume on other data: {changes[0]}{more}; resume with the data the run "
                           "started with, or add --allow-data-change to continue on the new data")
    return changes

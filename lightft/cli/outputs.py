"""Single output files of eval / predict / fewshot (`--metrics-out`, `--output`): checked first, written whole.

The path is checked before any model is loaded, so a typo in a folder name costs nothing and is one
line: its folder must exist, it must not be a folder itself, and it must not be one of the
command's inputs (`--data`, a file of the run or model folder): predictions written over the data
they were made from destroy it. The file is written to a temporary sibling and renamed, so a reader
(or a crash) never sees half of it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from lightft.errors import LightftError

PathLike = Union[str, os.PathLike]


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_file(path: Optional[PathLike], flag: str, inputs: tuple[Optional[PathLike], ...] = ()) -> Optional[Path]:
    """`path` as a Path after the checks above (None passes through: no file asked for)."""
    if path is None:
        return None
    out = Path(path)
    folder = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise LightftError(f"{flag} {out}: is a folder; give a file name")
    if not folder.is_dir():
        raise LightftError(f"{flag} {out}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise LightftError(f"{flag} {out}: the folder {folder} is not writable")
    for given in inputs:
        if given is None:
            continue
        src = Path(given)
        inside_folder = src.is_dir() and out.exists() and src.resolve() in out.resolve().parents
        if _same(out, src) or inside_folder:
            raise LightftError(f"{flag} {out}: is an input of this command ({src}); writing there would destroy it; "
                               "choose another file")
    return out


def write_output_file(path: Path, text: str) -> None:
    """`text` to `path` through a temporary sibling and a rename (the old file, if any, stays until then)."""
    from lightft.checkpoint import write_atomic

    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

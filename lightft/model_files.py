"""Which files a model folder may point at: shard names confined to the folder, side files that really lie in it.

A model folder is input, possibly from someone else. Its index may name shards, and an export
copies its tokenizer files; neither may reach outside the folder (`../../x`, `/etc/passwd`, a
`vocab.txt` linked to `~/.ssh/id_rsa`), or reading a model becomes reading, and exporting it
becomes shipping, any file of the machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from lightft.errors import LightftError, excerpt


def inside(folder: Path, name: Any, what: str, source: Path) -> Path:
    """`folder / name` for a file name read from a file (a shard), never a path outside `folder`.

    The name must be relative and stay below the folder once `..` is resolved. Symbolic links are
    judged where they are used: reading weights through one is harmless (the Hugging Face hub
    cache is made of them); copying one into an export is not, see `real_file_inside`.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise LightftError(f"{source}: {what} name {excerpt(name, 60)} is not a file name")
    rel = os.path.normpath(name)
    if os.path.isabs(rel) or rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise LightftError(f"{source}: {what} {excerpt(name, 60)} points outside the folder {folder}; "
                           "refusing to read it (a model folder may only name its own files)")
    return folder / rel


def real_file_inside(folder: Path, name: str) -> Optional[Path]:
    """`folder / name` when it is a regular file that really lies inside the model folder; None when absent.

    A symbolic link is followed only when its target stays inside the folder, or inside the
    `blobs/` store of the Hugging Face hub cache repository the folder is a snapshot of
    (`models--org--name/snapshots/REV/vocab.txt -> ../../blobs/HASH`). A link anywhere else
    (`vocab.txt -> ~/.ssh/id_rsa`) is an error: copying it would carry a local file into an export.
    """
    p = folder / name
    if not p.is_file():
        return None
    real, root = p.resolve(), folder.resolve()
    allowed = [root] + ([root.parent.parent / "blobs"] if root.parent.name == "snapshots" else [])
    if not any(a in real.parents for a in allowed):
        raise LightftError(f"{p}: is a symbolic link to a file outside the model folder ({real}); refusing to "
                           "copy it (replace the link with the file itself if it belongs there)")
    return p

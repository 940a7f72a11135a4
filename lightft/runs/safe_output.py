"""Writing outputs without ever destroying a user's files: the one mechanism every command that writes uses
(train's run folder, export, convert, predict --output, eval / fewshot --metrics-out).

For an output path TARGET in folder P:
- **Inputs first.** TARGET must not be an input of the command, nor a folder holding one (replacing it
  would delete the input), nor one of a run's or model's own files (`check_not_input`).
- **One writer.** An exclusive `flock` on `P/.TARGET.lightft-lock` is held for the whole write; a second
  writer fails at once with the holder's pid, host and command (`claim`). The lock dies with its
  process, so a killed writer never blocks the next one.
- **Replace only lightft's own folders.** `--overwrite` / `--force` replace a folder only when it holds
  the marker file `.lightft` with the same kind (run, export, model) that lightft wrote there
  (`check_folder_target`); anything else is refused, whatever the flag.
- **Temporary sibling, replaced at the end.** The new content is written to `P/.TARGET.lightft-tmp-PID-X`
  and put in place with one rename: for a folder, an atomic exchange (Linux `renameat2(RENAME_EXCHANGE)`;
  elsewhere two renames, undone on the next start if a kill falls between them), so at every moment
  TARGET is the complete old or the complete new folder.
- **Leftovers are cleaned.** Under the lock no other writer exists, so temporary siblings found there
  belong to a killed process: they are removed (or an old folder put back) and named in one line.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

from lightft import __version__
from lightft.checkpoint import atomic_file, sync_folder
from lightft.errors import LightftError, escape_for_terminal

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks (Windows); the rest still works
    fcntl = None  # type: ignore[assignment]

PathLike = Union[str, os.PathLike]
MARKER = ".lightft"
KINDS = ("run", "export", "model")
_TMP, _OLD, _LOCK = ".lightft-tmp-", ".lightft-old-", ".lightft-lock"
# the files that make a run folder what it is (an output may be written beside them, never over them)
RUN_OWN = ("run.json", "weights.safetensors", "metrics.json", "samples.json", MARKER, "checkpoints", "logs")


def say(message: str) -> None:
    """One line on stderr, escaped: it names files, whose names may hold control characters."""
    print(f"[lightft] {escape_for_terminal(message)}", file=sys.stderr)


# --- markers -------------------------------------------------------------------------------------------
def write_marker(folder: Path, kind: str) -> None:
    """`.lightft` in a folder lightft wrote: what may be replaced later by --overwrite / --force."""
    assert kind in KINDS
    (folder / MARKER).write_text(json.dumps({"kind": kind, "lightft_version": __version__,
                                             "created": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n",
                                 encoding="utf-8")


def folder_kind(folder: Path) -> Optional[str]:
    """What lightft wrote this folder as (run / export / model), or None for a folder it did not write.

    Folders from before the marker count by their own record: a run by a `run.json` naming its task,
    base model and options, an export by its `lightft_task.json`.
    """
    for name, legacy in ((MARKER, None), ("run.json", "run"), ("lightft_task.json", "export")):
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        if legacy is None and data.get("kind") in KINDS:
            return data["kind"]
        if legacy == "run" and {"task", "base_model", "options"} <= data.keys():
            return "run"
        if legacy == "export" and "task" in data:
            return "export"
    return None


# --- inputs --------------------------------------------------------------------------------------------
def _real(path: PathLike) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def check_not_input(target: PathLike, inputs: Sequence[Optional[PathLike]], flag: str) -> None:
    """Refuse an output that is an input, holds one (a parent folder), or is a file of an input folder
    that the input needs (a run's own files; any existing file of a model or data folder)."""
    out = _real(target)
    for given in inputs:
        if not given:
            continue
        src = _real(given)
        if out == src or out in src.parents:
            what = "is" if out == src else "holds"
            raise LightftError(f"{flag} {target}: {what} an input of this command ({given}); writing there would "
                               "destroy it; choose another path")
        if src.is_dir() and src in out.parents and out.exists():
            in_run = folder_kind(src) == "run"
            own = out.relative_to(src).parts[0] in RUN_OWN if in_run else \
                not (out.is_dir() and folder_kind(out) is not None)  # lightft's own folder inside a model folder
            if own:
                raise LightftError(f"{flag} {target}: is an input of this command (a file of {given}); writing "
                                   "there would destroy it; choose another path")


def check_folder_target(target: Path, kind: str, replace: bool, flag: str, replace_flag: str) -> bool:
    """Whether `target` holds something to replace. A non-empty folder is replaced only with
    `replace_flag`, and only when lightft wrote it as `kind` (its marker file)."""
    if target.exists() and not target.is_dir():
        raise LightftError(f"{flag} {target}: is a file; give a folder")
    if not target.exists() or not any(target.iterdir()):
        return False
    found, a_kind = folder_kind(target), ("an " if kind[0] in "aeiou" else "a ") + kind
    if found == kind and not replace:
        raise LightftError(f"{target}: folder is not empty (it holds {a_kind} lightft wrote); choose another {flag}, "
                           f"or add {replace_flag} to replace it")
    if found != kind:
        held = f"a lightft {found}" if found else f"files lightft did not write (no {MARKER} marker)"
        rule = f"{replace_flag} replaces only {a_kind} folder lightft wrote, and this one" if replace else \
            "folder is not empty: it"
        raise LightftError(f"{target}: {rule} holds {held}; nothing was changed; choose another {flag}")
    return True


# --- the lock and the leftovers ------------------------------------------------------------------------
def _sibling(target: Path, tag: str) -> Path:
    return target.with_name(f".{target.name}{tag}")


def _holder(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text(encoding="utf-8"))
        return (f"pid {info['pid']} on {info['host']}, since {info['since']}: "
                f"{str(info['command'])[:200]!r}")
    except (OSError, ValueError, KeyError, TypeError):
        return "its details are not written yet"


class Claim:
    """An exclusive lock on one output path, held until `release` (or the process's death)."""

    def __init__(self, target: Path, flag: str):
        self.target, self.flag = target, flag
        self.lock = _sibling(target, _LOCK)
        self._fd: Optional[int] = None

    def acquire(self) -> "Claim":
        while True:  # a holder may unlink the lock file between our open and our flock: then retry
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise LightftError(f"{self.flag} {self.target}: another lightft process is writing it "
                                       f"({_holder(self.lock)}); wait for it to finish, or choose another path"
                                       ) from None
            try:
                same = os.stat(self.lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "command": " ".join(["lightft", *sys.argv[1:]])}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(info) + "\n").encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.lock.unlink()  # while still holding it: a waiter that opened it sees a stale inode and retries
        os.close(self._fd)
        self._fd = None


def clean_leftovers(target: Path) -> list[str]:
    """Remove what a killed writer of `target` left beside it (call with the lock held); return their names.

    A displaced old folder (`.TARGET.lightft-old-*`, only from the two-rename fallback) is put back
    when TARGET itself is missing: the kill fell between the two renames."""
    found = sorted(target.parent.glob(f".{glob_escape(target.name)}{_TMP}*")) + \
        sorted(target.parent.glob(f".{glob_escape(target.name)}{_OLD}*"))
    names = []
    for p in found:
        if _OLD in p.name and not os.path.lexists(target):
            os.rename(p, target)
            say(f"put back {target} from {p.name}, left by a process killed while replacing it")
            continue
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        names.append(p.name)
    if names:
        say(f"removed {', '.join(names)} in {target.parent}: left by an earlier lightft process that was killed "
            "while writing")
    return names


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextlib.contextmanager
def claim(target: PathLike, flag: str) -> Iterator[Path]:
    """Hold the lock on `target` (creating its missing parent folders) and clean a killed writer's
    leftovers. Yields the target as an absolute path, a symbolic link resolved to what it names.
    Parent folders created here are removed again when the body fails and wrote nothing."""
    target = Path(os.path.abspath(target))
    if target.is_symlink():
        target = _real(target)
    created = [p for p in reversed(target.parents) if not p.exists()]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = Claim(target, flag).acquire()
    except OSError as e:
        _remove_empty(created)
        raise LightftError(f"{flag} {target}: cannot write in {target.parent} ({e.strerror or e}); "
                           "choose a writable folder") from None
    try:
        clean_leftovers(target)
        yield target
    except BaseException:
        lock.release()
        if not os.path.lexists(target):
            _remove_empty(created)
        raise
    lock.release()


def _remove_empty(folders: list[Path]) -> None:
    for p in reversed(folders):
        with contextlib.suppress(OSError):
            p.rmdir()


# --- writing and replacing -----------------------------------------------------------------------------
def temp_sibling(target: Path) -> Path:
    return _sibling(target, f"{_TMP}{os.getpid()}-{secrets.token_hex(4)}")


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL / ENOSYS / EOPNOTSUPP: this file system cannot exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


def publish_folder(tmp: Path, target: Path) -> None:
    """Put the complete folder `tmp` at `target`, replacing what is there in one step."""
    sync_folder(tmp)
    if not os.path.lexists(target):
        os.rename(tmp, target)
    elif _exchange(tmp, target):
        shutil.rmtree(tmp)  # now the old folder
    else:
        old = _sibling(target, f"{_OLD}{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(target, old)  # a kill here is undone by the next writer's clean_leftovers
        os.rename(tmp, target)
        shutil.rmtree(old)
    sync_folder(target.parent)


@contextlib.contextmanager
def new_folder(target: Path, kind: str) -> Iterator[Path]:
    """Yield an empty temporary sibling of `target` to fill; on success mark it as `kind` and put it at
    `target` (replacing what is there: check that first). On failure it is removed; `target` is untouched."""
    tmp = temp_sibling(target)
    os.mkdir(tmp)  # default permissions (umask), unlike mkdtemp's private 0700
    try:
        yield tmp
        write_marker(tmp, kind)
        publish_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def writing_folder(target: PathLike, kind: str, *, replace: bool, inputs: Sequence[Optional[PathLike]],
                   flag: str, replace_flag: str) -> Iterator[Path]:
    """The whole mechanism for a command that makes one folder (export, convert): check inputs, lock,
    check what is there, clean leftovers, yield a temporary sibling to fill, then replace at the end."""
    check_not_input(target, inputs, flag)
    with claim(target, flag) as out:
        check_folder_target(out, kind, replace, flag, replace_flag)
        with new_folder(out, kind) as tmp:
            yield tmp


def check_output_file(target: Optional[PathLike], flag: str, inputs: Sequence[Optional[PathLike]]) -> Optional[Path]:
    """An output file's path, checked before any work: its folder exists, it is not a folder, not an input."""
    if target is None:
        return None
    out = Path(target)
    folder = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise LightftError(f"{flag} {out}: is a folder; give a file name")
    if not folder.is_dir():
        raise LightftError(f"{flag} {out}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise LightftError(f"{flag} {out}: the folder {folder} is not writable")
    check_not_input(out, inputs, flag)
    return out


@contextlib.contextmanager
def writing_file(target: Path, flag: str, *, replace: bool = True, ours: Optional[Callable[[Path], bool]] = None,
                 what: str = "") -> Iterator[Path]:
    """Yield a temporary sibling of the output file `target` to write (check it first: `check_output_file`);
    under the lock, renamed over `target` when complete. An existing file is replaced only with
    `replace` (else --force is asked for), and only when `ours(file)` says it is `what` lightft writes."""
    with claim(target, flag) as out:
        if out.exists() and not replace:
            raise LightftError(f"{flag} {target}: already exists; choose another {flag} file or add --force")
        if out.exists() and ours is not None and not ours(out):
            raise LightftError(f"{flag} {target}: --force replaces only {what}, and this file is not one; nothing was "
                               "changed; choose another file")
        with atomic_file(out, temp_sibling(out), name=f"{flag} {target}") as tmp:
            yield tmp


def write_output_file(target: Path, content: Union[str, bytes], flag: str) -> None:
    """`content` (text as UTF-8) to `target` through `writing_file` (the old file stays until the new one is complete)."""
    with writing_file(target, flag) as tmp:
        tmp.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)

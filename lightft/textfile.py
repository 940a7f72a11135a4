"""Reading the text and JSON files a user hands to lightft, with one-line errors for every way they go wrong.

Every file lightft reads as text (data, `--config`, `config.json`, `run.json`, tokenizer files,
chat templates, prompt lists) comes through here, so the failure modes are handled once:
missing, unreadable (permissions, a folder in its place), not UTF-8, binary (NUL bytes),
malformed JSON, an object naming a key twice (the parser would keep the last one silently, as
a CSV header naming a column twice would), JSON nested so deeply that the parser would overflow
its stack, and JSON strings holding a lone UTF-16 surrogate (`"\\ud800"`: valid JSON syntax, but no real character,
and no tokenizer can encode it). Each error names the file (and line) and says what to do.

Lines are split on `\\n` only (a trailing `\\r` is dropped): `str.splitlines` also splits on
U+2028, U+0085, form feeds and other characters that are legal inside a JSON string or a
sentence, which would cut records in two.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Optional, Union

from lightft.errors import LightftError, excerpt

PathLike = Union[str, os.PathLike]

# A JSON escape of a UTF-16 surrogate. Pairs (emoji written as \ud83d\ude00) decode to one real
# character; only what is left unpaired after decoding is refused, and only files holding such an
# escape are searched for it.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def read_bytes(path: PathLike, what: str = "file") -> bytes:
    """The file's bytes; missing, a folder, or unreadable is one line naming it."""
    p = Path(path)
    if not p.exists():
        raise LightftError(f"{p}: {what} not found")
    if p.is_dir():
        raise LightftError(f"{p}: is a folder, expected a {what}")
    try:
        return p.read_bytes()
    except OSError as e:
        raise LightftError(f"{p}: cannot read the {what} ({e.strerror or type(e).__name__}); "
                           "check its permissions") from None


def decode_text(data: bytes, path: PathLike) -> str:
    """UTF-8 (a BOM is allowed) without NUL bytes; anything else names the line and byte."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise LightftError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                           "re-save the file as UTF-8") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise LightftError(f"{path}:{line}: NUL byte found — this looks like a binary file, not text")
    return text


def read_text_file(path: PathLike, what: str = "file") -> str:
    """The whole file as UTF-8 text; missing, unreadable, not UTF-8 or binary is a one-line error."""
    return decode_text(read_bytes(path, what), path)


def split_lines(text: str) -> list[str]:
    """Lines of a text file: split on `\\n` only, a `\\r` before it dropped (Windows files)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


class DuplicateKey(Exception):
    """A JSON object naming a key twice (json.loads would keep the last one silently)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        raise DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def parse_json(text: str, path: PathLike, line: Optional[int] = None) -> Any:
    """json.loads with one-line errors: malformed (with line and column), nested too deeply, lone surrogates.

    `line` is the line of a JSONL file that `text` is; without it, the JSON parser's line is named.
    """
    where = f"{path}:{line}" if line is not None else str(path)
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except DuplicateKey as e:
        raise LightftError(f"{where}: key {excerpt(e.args[0], 40)} appears twice in one object; the second would "
                           "silently replace the first, so rename or remove one") from None
    except json.JSONDecodeError as e:
        at = where if line is not None else f"{path}:{e.lineno}"
        raise LightftError(f"{at}: malformed JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise LightftError(f"{where}: JSON nested too deeply to read (over ~1000 levels of lists / objects)") from None
    if _SURROGATE_ESCAPE.search(text):
        check_no_surrogates(data, where)
    return data


def check_no_surrogates(value: Any, where: str, path: str = "") -> None:
    """Refuse a string holding a lone UTF-16 surrogate anywhere in a decoded JSON value."""
    stack = [(value, path)]
    while stack:
        v, at = stack.pop()
        if isinstance(v, str):
            m = _LONE_SURROGATE.search(v)
            if m:
                shown = f" in {at}" if at else ""
                raise LightftError(f"{where}: string{shown} holds a lone UTF-16 surrogate "
                                   f"(\\u{ord(m.group()):04x}), which is not a character; fix the text "
                                   f"near {excerpt(v[max(0, m.start() - 20):m.start()], 30)}")
        elif isinstance(v, dict):
            stack.extend((x, f"{at}.{k}" if at else str(k)) for k, x in v.items())
            stack.extend((k, at) for k in v)
        elif isinstance(v, list):
            stack.extend((x, f"{at}[{i}]") for i, x in enumerate(v))


def read_json_file(path: PathLike, what: str = "file") -> Any:
    """A JSON file: read_text_file + parse_json."""
    return parse_json(read_text_file(path, what), path)

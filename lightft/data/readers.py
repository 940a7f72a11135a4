"""Read records from CSV / TSV / JSONL / JSON files with errors that name the file and line.

Every reader yields `(line_number, record_dict)` so the DataModules can point at the exact line of
a bad record. Nothing here knows about tokenizers or tasks.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from lightft.errors import LightftError

PathLike = Union[str, os.PathLike]
Record = tuple[int, dict[str, Any]]


def read_text(path: PathLike) -> str:
    """The whole file as UTF-8 text; a missing, empty-named or binary file is a one-line error."""
    p = Path(path)
    if not p.is_file():
        raise LightftError(f"{p}: file not found")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise LightftError(f"{p}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                           "re-save the file as UTF-8") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise LightftError(f"{p}:{line}: NUL byte found — this looks like a binary file, not text")
    return text


def detect_format(path: PathLike, fmt: Optional[str] = None) -> str:
    if fmt:
        return fmt
    suffix = Path(path).suffix.lower()
    table = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json", ".txt": "txt", ".conll": "conll"}
    if suffix not in table:
        raise LightftError(f"{path}: cannot tell the format from the extension {suffix!r}; "
                           f"use one of {', '.join(table)} or pass the format explicitly")
    return table[suffix]


def iter_jsonl(path: PathLike) -> Iterator[Record]:
    text = read_text(path)
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise LightftError(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno}); "
                               "each line must be one JSON object") from None
        if not isinstance(obj, dict):
            raise LightftError(f"{path}:{n}: expected a JSON object, found {type(obj).__name__}")
        yield n, obj


def iter_json_list(path: PathLike) -> Iterator[Record]:
    """A JSON file holding a list of objects (Alpaca style); 'line' is the 1-based item index."""
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LightftError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise LightftError(f"{path}: expected a JSON list of objects at the top level")
    for n, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            raise LightftError(f"{path}: item {n} is {type(obj).__name__}, expected an object")
        yield n, obj


def iter_delimited(path: PathLike, delimiter: str) -> Iterator[Record]:
    """CSV/TSV with a header row. TSV is read without quote handling (GLUE files contain bare quotes)."""
    text = read_text(path)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(text.splitlines(), delimiter=delimiter, quoting=quoting)
    try:
        header = next(reader)
    except StopIteration:
        return
    header = [h.strip() for h in header]
    try:
        for row in reader:
            n = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise LightftError(f"{path}:{n}: {len(row)} fields, but the header has {len(header)} "
                                   f"({', '.join(header)}); quote fields that contain the delimiter")
            yield n, dict(zip(header, row))
    except csv.Error as e:
        raise LightftError(f"{path}:{reader.line_num}: malformed {'TSV' if delimiter == chr(9) else 'CSV'} ({e})") from None


def iter_records(path: PathLike, fmt: Optional[str] = None) -> Iterator[Record]:
    """Records of a tabular/JSON file, format from `fmt` or the extension."""
    fmt = detect_format(path, fmt)
    if fmt == "jsonl":
        return iter_jsonl(path)
    if fmt == "json":
        return iter_json_list(path)
    if fmt in ("csv", "tsv"):
        return iter_delimited(path, "," if fmt == "csv" else "\t")
    raise LightftError(f"{path}: format {fmt!r} is not a record format here; use csv, tsv, jsonl or json")


def read_records(path: PathLike, fmt: Optional[str] = None) -> list[Record]:
    records = list(iter_records(path, fmt))
    if not records:
        raise LightftError(f"{path}: no records found (the file is empty)")
    return records


def require_field(path: PathLike, line: int, record: dict[str, Any], key: str) -> Any:
    """record[key], or an error naming file, line, the missing key and the keys that are there."""
    if key not in record:
        raise LightftError(f"{path}:{line}: missing field {key!r}; found fields: {', '.join(map(str, record)) or 'none'}"
                           " (column names are configurable, e.g. --text-column)")
    return record[key]

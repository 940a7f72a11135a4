"""Read records from CSV / TSV / JSONL / JSON files with errors that name the file and line.

Every reader yields `(line_number, record_dict)` so the DataModules can point at the exact line of
a bad record. Nothing here knows about tokenizers or tasks.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from lightft.errors import LightftError, escape_for_terminal, excerpt
from lightft.textfile import parse_json, read_text_file, split_lines

PathLike = Union[str, os.PathLike]
Record = tuple[int, dict[str, Any]]


def read_text(path: PathLike) -> str:
    """The whole file as UTF-8 text; a missing, unreadable or binary file is a one-line error."""
    return read_text_file(path)


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
    """One JSON object per line. Lines end at `\n` only: U+2028 / U+0085 inside a string are text."""
    for n, line in enumerate(split_lines(read_text(path)), start=1):
        if not line.strip():
            continue
        obj = parse_json(line, path, n)
        if not isinstance(obj, dict):
            raise LightftError(f"{path}:{n}: expected a JSON object, found {type(obj).__name__}; "
                               "each line must be one JSON object")
        yield n, obj


def iter_json_list(path: PathLike) -> Iterator[Record]:
    """A JSON file holding a list of objects (Alpaca style); 'line' is the 1-based item index."""
    data = parse_json(read_text(path), path)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise LightftError(f"{path}: expected a JSON list of objects at the top level")
    for n, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            raise LightftError(f"{path}: item {n} is {type(obj).__name__}, expected an object")
        yield n, obj


def check_header(path: PathLike, header: list[str]) -> None:
    """A header naming a column twice would let the last column silently replace the first."""
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if name in seen:
            raise LightftError(f"{path}:1: column {excerpt(name)} appears twice in the header (columns {seen[name]} "
                               f"and {i}); rename one of them")
        seen[name] = i


def iter_delimited(path: PathLike, delimiter: str) -> Iterator[Record]:
    """CSV/TSV with a header row; records carry the line they start on.

    CSV follows RFC 4180 strictly: a field in quotes may hold the delimiter, `""` and line breaks
    (kept as line breaks in the text, which tokenizers read as whitespace, so no words are glued;
    how many records span lines is reported, since an unintended one means a stray quote). A quote
    that is never closed, or text after a closing quote, is an error naming the line the record
    starts on. TSV is read without quote handling (GLUE files contain bare quotes).
    """
    kind = "TSV" if delimiter == "\t" else "CSV"
    quoting = csv.QUOTE_NONE if kind == "TSV" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter, quoting=quoting, strict=True)
    start, multiline = 1, []
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        check_header(path, header)
        start = reader.line_num + 1
        for row in reader:
            first, last, start = start, reader.line_num, reader.line_num + 1
            if not row or all(not c.strip() for c in row):
                continue
            span = f" (a quoted field runs from line {first} to {last}: is a closing quote missing?)" \
                if last > first else "; quote fields that contain the delimiter"
            if len(row) != len(header):
                raise LightftError(f"{path}:{first}: {len(row)} fields, but the header has {len(header)} "
                                   f"({escape_for_terminal(', '.join(header), 120)}){span}")
            if last > first:
                multiline.append(first)
            yield first, dict(zip(header, row))
    except csv.Error as e:
        reason = str(e)
        if "unexpected end of data" in reason or "field larger than field limit" in reason:
            reason = f"a quote opened in the record starting on line {start} is never closed; close it, or write a " \
                     "quote inside a quoted field as \"\""
        raise LightftError(f"{path}:{start}: malformed {kind} ({reason})") from None
    if multiline:
        print(f"[data] {path}: {len(multiline)} records span several lines through quoted line breaks (first at line "
              f"{multiline[0]}); the breaks are kept as whitespace — if that is unexpected, look for a stray quote",
              file=sys.stderr)


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


COLUMNS_HINT = "column names are configurable, e.g. --text-column"


def require_field(path: PathLike, line: int, record: dict[str, Any], key: str, hint: str = COLUMNS_HINT) -> Any:
    """record[key], or an error naming file, line, the missing key and the keys that are there, with `hint`
    (how to fix it: the column flags where they apply, else the format the reader expects)."""
    if key not in record:
        raise LightftError(f"{path}:{line}: missing field {key!r}; found fields: "
                           f"{escape_for_terminal(', '.join(map(str, record)), 120) if record else 'none'}"
                           f" ({hint})")
    return record[key]

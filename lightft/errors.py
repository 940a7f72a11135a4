"""The one exception type users see, and the escaping of everything a message quotes from a file.

Anything raised as `LightftError` is a problem with the user's input (a file, a key, an option):
its message is a single line that names the culprit and the fix, and the CLI prints it without a
traceback. Internal invariants use `assert` instead, so a real bug still shows its stack.

Messages quote data: a label, a column name, a tensor name, a chat template's `raise_exception`
text. Those come from files lightft did not write, so they may hold ANSI escapes, carriage returns,
a forged `error:` line or a whole secret file. `escape_for_terminal` makes any text one visible
line (control and invisible format characters become `\\x1b`-style escapes) and `excerpt` also cuts a
quoted value short. The CLI passes every message it prints through `escape_for_terminal`, so no
message can reach the terminal raw; `excerpt` is for values interpolated into messages.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Optional

# Unicode categories never printed raw: controls (C0, C1, DEL), invisible format characters (bidi
# overrides, zero-width joiners), line / paragraph separators, surrogates, private use, unassigned.
_HIDDEN = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
ELLIPSIS = "…"


class LightftError(ValueError):
    """A user-facing error whose message is one line naming the file/key/option and the fix."""


def _escape_char(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    if c == "\\" or unicodedata.category(c) not in _HIDDEN:
        return c
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape_for_terminal(text: Any, limit: Optional[int] = None) -> str:
    """`text` as one printable line: control / invisible characters escaped, cut to `limit` characters.

    Printable characters of any script stay as they are (`café`, `東京`); a backslash stays single,
    so ordinary Windows paths read normally. Cutting happens on the escaped text and ends in `…`.
    """
    s = str(text)
    if limit is not None and len(s) > 4 * limit:  # never escape megabytes only to cut them
        s = s[: 4 * limit]
        cut = True
    else:
        cut = False
    out = "".join(c if c.isprintable() and c != "\\" else _escape_char(c) for c in s)
    if limit is not None and len(out) > limit:
        out, cut = out[: max(0, limit - 1)], True
    return out + ELLIPSIS if cut else out


def excerpt(value: Any, limit: int = 60) -> str:
    """A short, quoted, escaped rendering of a value read from a file, for use inside a message.

    Strings are quoted ('...'), other values shown as Python would print them (lists, numbers);
    either way the result is one line of at most about `limit` characters.
    """
    if isinstance(value, str):
        return "'" + escape_for_terminal(value, limit) + "'"
    return escape_for_terminal(repr(value), limit)

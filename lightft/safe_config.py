"""Loading `--config` files (YAML, TOML): plain values only, of bounded size, one-line errors.

`yaml.safe_load` already refuses tags that build objects. It does not bound aliases: a "billion
laughs" file of a few hundred bytes (`a: &a [x, x, ...]`, `b: &b [*a, *a, ...]`, ...) is a small
graph that becomes an exponentially large value the moment anything walks it (validation,
printing, writing run.json): minutes, then MemoryError. Here the composed node graph is measured
first, counting each alias as the full size of what it points to; past `MAX_NODES` (or with an
alias that contains itself) the file is refused in one line, before any value is built.

Both formats are read by pure-Python parsers that recurse per nesting level, so a file is capped at
`MAX_BYTES` (an options file is a page) and nesting past Python's stack is one line, not a
RecursionError (libyaml's C composer is not used: it crashes the process on deep nesting).
"""

from __future__ import annotations

import os
import tomllib
from typing import Any, Union

from lightft.errors import LightftError, escape_for_terminal

MAX_NODES = 100_000  # scalars + lists + mappings after expanding aliases; an options file has a few dozen
MAX_BYTES = 64 << 10  # a config file is a page of options, not data (pure-Python YAML reads ~30 KB/s of nesting)


def _expanded_size(root: Any, source: str) -> int:
    """Nodes in the value the graph stands for (aliases expanded), stopping as soon as it passes the limit."""
    import yaml

    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise LightftError(f"{source}: YAML alias refers to itself (a recursive structure); "
                               "options are plain values")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_NODES:
                raise LightftError(f"{source}: YAML expands to more than {MAX_NODES:,} values through aliases "
                                   "(&anchor / *alias); refusing to load it (an options file has a few dozen)")
        active.discard(key)
        sizes[key] = total
        return total

    return size(root)


def check_size(text: str, source: Union[str, os.PathLike]) -> None:
    if len(text) > MAX_BYTES:
        raise LightftError(f"{source}: {len(text):,} characters is too large for a config file "
                           f"(limit {MAX_BYTES:,}); is this the right file?")


def load_toml(text: str, source: Union[str, os.PathLike]) -> dict[str, Any]:
    """The TOML document `text` (bounded size and nesting); `source` names the file in errors."""
    check_size(text, source)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise LightftError(f"{source}: malformed TOML ({escape_for_terminal(e, 200)})") from None
    except RecursionError:
        raise LightftError(f"{source}: TOML nested too deeply to read") from None


def load_yaml(text: str, source: Union[str, os.PathLike]) -> Any:
    """Plain YAML values of `text` (no tags, bounded alias expansion); `source` names the file in errors."""
    try:
        import yaml
    except ImportError:
        raise LightftError(f"{source}: YAML configs need pyyaml (pip install pyyaml), or use TOML") from None
    check_size(text, source)
    loader = yaml.SafeLoader(text)  # the pure-Python one: libyaml's C composer crashes on deep nesting
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, str(source))
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise LightftError(f"{source}: malformed YAML ({escape_for_terminal(str(e).splitlines()[0], 200)})") from None
    except RecursionError:
        raise LightftError(f"{source}: YAML nested too deeply to read") from None
    finally:
        loader.dispose()

"""Reading the YAML files users hand us (spaces, architectures, training configs), defensively.

A file is read as bytes with a size limit (``MAX_BYTES``), refused when it is a directory, a FIFO
or anything but a regular file, when it is gzip-compressed or not UTF-8 text; then parsed with
PyYAML's safe loader, extended to refuse what ``safe_load`` lets through:

* **duplicate keys** (``safe_load`` keeps the last: a second ``train:`` would silently replace the
  first);
* **nesting deeper than** ``MAX_DEPTH`` (PyYAML's composer recurses: 1000 levels are a
  RecursionError) and more than ``MAX_ALIASES`` aliases, or a document that expands to more
  than ``MAX_VALUES`` values once aliases are followed (a 1.5 KB "billion laughs" file expands
  to 10^9: anything that walks it hangs);
* **numbers no setting needs**: NaN or infinite floats, integers beyond 2^53 (``10**400``
  written out), anywhere in the document;
* scalars a tag cannot build (``!!float abc``).

Each refusal is the caller's error class with one line naming the file, the rule and where
(line, or key path). Values in messages are shortened by :func:`short`.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1 << 20  # 1 MiB: a space file is a few KB
MAX_DEPTH = 64
MAX_ALIASES = 100
MAX_VALUES = 100_000
MAX_INT = 2 ** 53
SHORT = 80


def clip(text: str, limit: int = SHORT) -> str:
    """``text`` cut to ``limit`` characters, with how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def short(value: Any, limit: int = SHORT) -> str:
    """``repr(value)``, cut to about ``limit`` characters with how long it was."""
    return clip(repr(value), limit)


class _Refused(Exception):
    """A rule of this module broken while loading (turned into the caller's error class)."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what the module docstring lists, and reading ``1e-3``,
    ``1e5`` and ``5.0e9`` as numbers, as YAML 1.2 and every ML config do (YAML 1.1 wants a dot
    and the exponent's sign, and reads them as text otherwise)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise _Refused(f"more than {MAX_ALIASES} aliases (line {mark.line + 1}): alias chains can "
                               "expand a small file without bound")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _Refused(f"nesting deeper than {MAX_DEPTH} levels (line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _Refused(f"duplicate key {short(key)} (lines {seen[key]} and {line}): the second "
                                       "would silently replace the first")
                    seen[key] = line
                except TypeError:  # an unhashable key: SafeConstructor reports it
                    continue
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(  # the exponent forms YAML 1.1's float misses (see _Loader)
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def read_text(path: str | Path, what: str, error_cls) -> str:
    """The UTF-8 text of ``path``; ``error_cls("", message)`` (one line, naming the file) when it
    is missing, not a regular file, larger than ``MAX_BYTES``, compressed or not UTF-8 text."""
    p = Path(path)

    def fail(rule: str):
        return error_cls("", f"{what} {p} {rule}", None, show_value=False)

    try:  # a name the system refuses (too long, ...) is an OSError even for exists()
        if not p.exists():
            raise fail("does not exist")
        if p.is_dir():
            raise fail("is a directory, not a file")
        if not p.is_file():
            raise fail("is not a regular file (a FIFO, socket or device?)")
        size = p.stat().st_size
    except OSError as e:
        raise fail(f"cannot be read: {e.strerror or e}") from None
    if size > MAX_BYTES:
        raise fail(f"is {size} bytes, more than the {MAX_BYTES} a {what} may have")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise fail(f"cannot be read: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        raise fail("is gzip-compressed: decompress it first")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise fail(f"is not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start}): a binary file?") from None
    if "\x00" in text:
        raise fail(f"is not text (a NUL byte at offset {text.index(chr(0))}): a binary file?")
    return text


def load_yaml(text: str, error_cls, *, where: str = "the file") -> Any:
    """Parse ``text`` under the rules of this module; ``error_cls("", message)`` when broken."""
    def fail(rule: str):
        return error_cls("", f"{where} {rule}", None, show_value=False)

    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except _Refused as e:
        raise fail(f"is refused: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise fail(f"is not valid YAML ({at}{clip(problem, 200)})") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # a tag that cannot build its value
        raise fail(f"has a value its tag cannot build ({type(e).__name__}: {clip(str(e), 200)})") from None
    problem = _check_values(data)
    if problem:
        raise fail(f"is refused: {problem}")
    return data


def load_json(text: str, error_cls, *, where: str = "the file") -> Any:
    """Parse JSON ``text`` under the same rules (duplicate keys, NaN/Infinity, sizes)."""
    import json

    def fail(rule: str):
        return error_cls("", f"{where} {rule}", None, show_value=False)

    def pairs(items):
        out: dict = {}
        for k, v in items:
            if k in out:
                raise _Refused(f"duplicate key {short(k)}: the second would silently replace the first")
            out[k] = v
        return out

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except _Refused as e:
        raise fail(f"is refused: {e}") from None
    except (ValueError, RecursionError) as e:
        raise fail(f"is not valid JSON ({clip(str(e), 200)})") from None
    problem = _check_values(data)
    if problem:
        raise fail(f"is refused: {problem}")
    return data


def _check_values(data: Any) -> str | None:
    """The first rule the loaded document breaks (counting values with aliases followed), or None."""
    stack: list[tuple[Any, str]] = [(data, "")]
    count = 0
    while stack:
        obj, path = stack.pop()
        count += 1
        if count > MAX_VALUES:
            return (f"it holds more than {MAX_VALUES} values, counting every alias expanded (a space, "
                    "architecture or config has hundreds)")
        if isinstance(obj, bool):
            continue
        if isinstance(obj, float) and not math.isfinite(obj):
            return f"{path or 'the document'} is {obj}: NaN and infinite numbers are not settings"
        if isinstance(obj, int) and abs(obj) > MAX_INT:
            return f"{path or 'the document'} is an integer of {len(str(abs(obj)))} digits, beyond 2^53"
        if isinstance(obj, Mapping):
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in obj.items())
        elif isinstance(obj, list):
            stack.extend((v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(obj))
    return None

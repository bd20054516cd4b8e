"""A faster reading of large config files (rapidyaml + orjson), used only where it provably equals the walker's.

The reference reading of a config file is `yamlsource`'s walker over libyaml's events: YAML 1.1 as
PyYAML's SafeLoader resolves it, the line of every key, `${VAR}` expansion, duplicate keys refused. For
100,000 users libyaml's events alone, through PyYAML's binding, cost about 1 s of CPU; rapidyaml parses
the same file and orjson reads it back from rapidyaml's JSON in about a third of that.

rapidyaml reads YAML 1.2, and JSON drops what it cannot say (tags, anchors, aliases, several documents,
a key given twice, whether a scalar was quoted). So its result is used only when these checks prove it
is the walker's result:
- the text has no directive and no node property (tag, anchor, alias) where one could start a node, and
  rapidyaml's tree is one document whose root is a mapping;
- every number, boolean and null is checked against its source text in rapidyaml's tree: PyYAML's
  resolver and constructor must give the same value of the same type (`1e3`, `-.5` are strings in YAML 1.1);
- every string that YAML 1.1 would read as something else had it been written plain (`yes`, `on`, `~`,
  `0x1F`, `017`, `1:30`, `2001-12-14`, `.nan`, `<<`: PyYAML's own resolver patterns) must have been quoted
  (a key of that kind is left to the walker); `"+15551230000"` needs no look: written plain, rapidyaml would
  have given a number JSON refuses; so must every string that starts with an indicator (`:`, `-`, `?`,
  `[`, ...) or holds ` #` or `: `, where rapidyaml accepts plain scalars that PyYAML refuses;
- no key is given twice: the parsed value has exactly as many nodes as rapidyaml's tree.
Otherwise `read` returns None and the caller uses the walker; so does a file with any error, which is
then reported by the walker with file:line (see `proxy.config.load`).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import yaml

from proxy.config.environment import expand
from proxy.config.yamlsource import Document, Path, _Walker

__all__ = ["read"]


def _ambiguous_strings() -> re.Pattern[str]:
    """Text PyYAML's SafeLoader would resolve, written plain, to something else than a string."""
    patterns: list[str] = []
    for resolvers in yaml.SafeLoader.yaml_implicit_resolvers.values():
        for _, regexp in resolvers:
            body = regexp.pattern.removeprefix("^").removesuffix("$")
            if body not in patterns:
                patterns.append(body)
    return re.compile("(?:" + "|".join(patterns) + ")$", re.VERBOSE)


def read(text: str, file: str, environ: Mapping[str, str]) -> Document | None:
    """The document the walker would read from `text`, or None when that cannot be proved (or rapidyaml is
    not installed, or the text has any problem: then the walker reads it and reports)."""
    if text.startswith("\ufeff") or text.startswith("%") or "\n%" in text:
        return None  # a byte-order mark or a directive: rare, and the walker's business
    if ":]" in text or ":}" in text or ":," in text:
        return None  # `[a:]`: rapidyaml reads a mapping where PyYAML refuses the file
    data = text.encode()
    if _has_node_property(data):
        return None
    try:
        import ryml
    except ImportError:
        return None
    tree = ryml.Tree()
    # Sized up front: grown by doubling, the tree would copy itself ~20 times and end up to twice too big
    # (100,000 users: 0.17 s and 50 MB saved). Nearly every node is a `key: value` or a `- ` item (a colon
    # inside a value overcounts a little; a flow list's items are not counted, and the tree grows for them).
    tree.reserve(min(data.count(b":") + data.count(b"- "), len(data)) + 16)
    tree.reserve_arena(len(data) + 16)
    try:
        with _quiet_stderr():  # rapidyaml prints its parse errors on stderr; the walker will report them
            ryml.parse_in_arena(data, tree)
        size = len(data)
        del data
        root = tree.root_id()
        nodes = tree.size()
        if tree.is_stream(root):
            if tree.num_children(root) != 1:
                return None
            root = tree.first_child(root)
            nodes -= 1
        if not tree.is_map(root):
            return None
        value = orjson.loads(_json_of(ryml, tree, root, size))
    except Exception:  # rapidyaml's parse errors, what it will not emit, what orjson will not read (`+1`)
        return None
    document = Document(file=file, data=value, text=text)
    checker = _Checker(document, environ, tree, root, ryml.NONE)
    try:
        same = checker.same(value, nodes)
    except Exception:  # whatever the checks did not foresee: the walker reads the file
        return None
    return document if same else None


def _json_of(ryml: Any, tree: Any, node: int, source_size: int) -> memoryview:
    """rapidyaml's JSON of `node` as bytes written into one buffer: `emit_json_malloc` would also decode
    them into a str (20 MB for a 13.6 MB file: 0.03 s). The buffer is sized for JSON's quotes and
    indentation (about 1.5x the YAML); when that is short, rapidyaml says the size and it is written again."""
    buffer = bytearray(2 * source_size + 64)
    failed, length = ryml.emit_json_to_substr(tree, node, buffer)
    if failed:
        buffer = bytearray(length)
        failed, length = ryml.emit_json_to_substr(tree, node, buffer)
        if failed:
            raise ValueError("rapidyaml's JSON did not fit the size it gave")
    return memoryview(buffer)[:length]


def _has_node_property(data: bytes) -> bool:
    """A `&`, `*` or `!` where a node's properties could start: the text's start, after white space or a
    flow indicator (elsewhere, as in `AT&T` or `goodbye!`, it is part of a scalar). A line that starts with
    `#` holds none: it is a comment, or a line of a scalar's text."""
    for mark in b"&*!":
        at = data.find(mark)
        while at != -1:
            if at == 0 or data[at - 1] in _PROPERTY_AFTER:
                line = data[data.rfind(b"\n", 0, at) + 1 : at].lstrip(b" \t")
                if not line.startswith(b"#"):
                    return True
            at = data.find(mark, at + 1)
    return False


_PROPERTY_AFTER = frozenset(b" \t\r\n[{,:?-")


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to protect (closed by a supervisor)
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _Different(Exception):
    """rapidyaml's reading differs, or may differ, from the walker's."""


class _Checker(_Walker):
    """Walks the parsed value once: proves each scalar is what the walker would read, counts the nodes,
    and expands `${...}` as the walker does (in document order, so issues and warnings come in order)."""

    def __init__(self, document: Document, environ: Mapping[str, str], tree: Any, root: int, none: int) -> None:
        super().__init__(document, environ)
        self.tree = tree
        self.root = root
        self.none = none  # rapidyaml's "no such node"
        self.ambiguous = _ambiguous_strings().match
        self.starts = frozenset(self.constructor.yaml_implicit_resolvers) - {""}
        self.keys: set[str] = set()
        self.look = frozenset(_INDICATORS) | self.starts | {""}  # first characters `plain_string` looks at
        self.interpolating = document.text is None or "${" in document.text  # else no string holds a `${`

    def same(self, value: dict[str, Any], nodes: int) -> bool:
        try:
            counted = self.visit(value, ())
        except _Different:
            return False
        self.document.issues = self.issues
        return counted == nodes and not self.issues

    def visit(self, container: Any, path: Path) -> int:
        """The nodes in `container` (a dict or a list), itself included."""
        if type(container) is list:
            return self.visit_list(container, path)
        known, quoted = self.keys, self.tree.is_key_quoted
        for key in container:
            # A key that reads as itself only if quoted: it must have been, here.
            if key not in known and not self.plain_key(key) and not quoted(self.node((*path, key))):
                raise _Different(key)
        nodes = 1 + len(container)
        for key, value in container.items():
            nodes += self.visit_item(container, key, value, path)
        return nodes

    def visit_list(self, container: list[Any], path: Path) -> int:
        """`visit` for a list. A mapping whose keys were all seen before and whose values are all strings
        that need no look is only counted: no call, no path and no second loop over its items (a large
        file's users and routes are 200,000 such mappings, a third of the checker's time)."""
        nodes = 1 + len(container)
        known, look = self.keys, self.look
        for index, value in enumerate(container):
            if type(value) is dict and known.issuperset(value):
                for text in value.values():
                    # `quiet`, inline and a little stricter (any `#`, `:` or `${`): a call per value would
                    # cost what the shortcut saves. What it stops at, `visit_item` decides exactly.
                    if type(text) is not str:
                        break
                    first = text[:1]
                    if (
                        (first in look and not (first == "+" and text[1:].isdigit() and text.isascii()))
                        or "#" in text
                        or ":" in text
                        or "${" in text
                    ):
                        break
                else:
                    nodes += len(value)
                    continue
            nodes += self.visit_item(container, index, value, path)
        return nodes

    def visit_item(self, container: Any, key: str | int, value: object, path: Path) -> int:
        """Check one value of `container` (interpolated in place); the nodes it adds beyond itself."""
        kind = type(value)
        if kind is str:
            text: str = value  # type: ignore[assignment]
            if not self.quiet(text):
                if self.needs_look(text):
                    self.plain_string(text, (*path, key))
                if self.interpolating and "${" in text:
                    container[key] = self.interpolate(text, (*path, key))
            return 0
        if kind is dict or kind is list:
            return self.visit(value, (*path, key)) - 1
        self.same_scalar((*path, key), value)
        return 0

    def needs_look(self, text: str) -> bool:
        """Whether `text` may read as something else than itself unless quoted: its first character is one a
        rule cares about (but for `+digits`, which written plain rapidyaml would not give as a string), or it
        holds an indicator inside. One set lookup decides for most strings."""
        first = text[:1]
        return (first in self.look and not (first == "+" and text[1:].isdigit() and text.isascii())) or (
            ("#" in text or ":" in text) and _inner_indicator(text)
        )

    def quiet(self, text: str) -> bool:
        """A string that needs no look and no interpolation."""
        return not self.needs_look(text) and not (self.interpolating and "${" in text)

    def plain_key(self, key: str) -> bool:
        """Whether `key` reads as this string wherever it is written; False: only if it was quoted there.
        The same few keys come 100,000s of times: each plain one is checked once."""
        if not key or (key[:1] in self.starts and self.ambiguous(key)):
            raise _Different(key)  # `1:`, `yes:`, `<<:`, `:` are no string keys to the walker
        if key[:1] in _INDICATORS or _inner_indicator(key):
            return False
        self.keys.add(key)
        return True

    def plain_string(self, text: str, path: Path) -> None:
        """A string that may read as something else unless it was quoted: it must have been, if it would."""
        if (
            not text
            or text[:1] in _INDICATORS
            or _inner_indicator(text)
            or (text[:1] in self.starts and not _plus_digits(text) and self.ambiguous(text))
        ):
            self.quoted(path)

    def interpolate(self, value: str, path: Path) -> str:
        if expand(value, self.environ).error is not None:
            raise _Different(path)  # a malformed `${`: the walker reports it, with its line
        return super().interpolate(value, path)

    def node(self, path: Path) -> int:
        tree = self.tree
        node = self.root
        for part in path:
            node = tree.child(node, part) if isinstance(part, int) else tree.find_child(node, part.encode())
            if node == self.none:
                raise _Different(path)
        return node

    def quoted(self, path: Path) -> None:
        if not self.tree.is_val_quoted(self.node(path)):
            raise _Different(path)

    def same_scalar(self, path: Path, value: object) -> None:
        """A number, boolean or null in rapidyaml's JSON: PyYAML must read its source text as the same."""
        tree = self.tree
        node = self.node(path)
        if not tree.is_val_plain(node):
            raise _Different(path)
        source = tree.val(node)
        text = "" if source is None else bytes(source).decode()
        tag = self.constructor.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        expected = self.constructor.construct_object(yaml.ScalarNode(tag, text))
        if type(expected) is not type(value) or expected != value:
            raise _Different(path)


# A plain scalar may start with these in YAML 1.2 where YAML 1.1 (PyYAML) refuses it, e.g. `{:: []}`:
# such a string must have been quoted.
_INDICATORS = frozenset("-?:,[]{}#&*!|>'\"%@`")


def _inner_indicator(text: str) -> bool:
    """` #` (a comment) or `: ` (a mapping) inside, or `:` at the end: no plain scalar to PyYAML."""
    return _INNER_INDICATOR(text) is not None


_INNER_INDICATOR = re.compile(r"[ \t]#|:[ \t]|:$").search


def _plus_digits(text: str) -> bool:
    return text[0] == "+" and text[1:].isascii() and text[1:].isdigit()

"""YAML text -> plain Python values, remembering the line of every key, and `${ENV}` interpolation.

Config errors must name file, line and key path, and PyYAML's constructors forget positions, so we
walk the composed node graph ourselves. That also lets us refuse duplicate keys, which PyYAML
silently lets the last one win.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import yaml

from proxy.config.environment import Expansion, expand, first_reference

Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a config file, located precisely enough to fix it."""

    file: str
    line: int | None
    path: Path
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {format_path(self.path)}: {self.message}"


class ConfigError(Exception):
    """A config that must not be served. Carries every issue found, not only the first, and the warnings
    found with them (an unset secret variable's warning may be the reason for an error elsewhere)."""

    def __init__(self, issues: list[ConfigIssue], warnings: list[ConfigIssue] | None = None) -> None:
        self.issues = issues
        self.warnings = warnings or []
        super().__init__("\n".join(str(issue) for issue in issues))


@dataclass
class Document:
    """Parsed YAML plus where each key path sits in the file.

    With `text` set, `lines` is filled on the first `line_of`: only a file with issues pays for the
    line of each of its (for 100,000 users, a million) key paths.
    """

    file: str
    data: object
    lines: dict[Path, int] = field(default_factory=dict)
    text: str | None = field(default=None, repr=False)
    # `${NAME}` references: what each expanded value was written as, so no message ever shows a value
    # that came from the environment (a secret, often); and the references that were not set.
    expanded: dict[Path, str] = field(default_factory=dict, repr=False)
    secrets_seen: dict[str, str] = field(default_factory=dict, repr=False)
    unset: list[tuple[Path, str]] = field(default_factory=list)
    # Problems found while reading (duplicate keys, bad `${...}`): reported with every other issue.
    issues: list[ConfigIssue] = field(default_factory=list)

    def line_of(self, path: Path) -> int | None:
        if self.text is not None:
            self.lines = _EventWalker(self, {}, record_lines=True).lines_of(self.text)
            self.text = None
        # A missing key is reported at the line of its closest existing parent.
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def issue(self, path: Path, message: str) -> ConfigIssue:
        return ConfigIssue(self.file, self.line_of(path), path, self.scrub(message))

    def explained_by_unset(self, path: Path, *, within: bool = False) -> bool:
        """True when `path`'s value (`within`: or a value inside it) is empty because a `${VAR}` in it is
        unset: that is the one error to report there."""
        size = len(path)
        return any(where == path or (within and where[:size] == path) for where, _ in self.unset)

    def show(self, path: Path, value: object) -> str:
        """`value` quoted for a message, or the `${NAME}` text it was expanded from."""
        written = self.expanded.get(path)
        return written if written is not None else repr(value)

    def scrub(self, message: str) -> str:
        """`message` with every value that came from the environment replaced by its `${NAME}`."""
        for value, name in self.secrets_seen.items():
            if value in message:
                message = message.replace(value, name)
        return message


# Called for each entry of the top-level `users` and `routes` lists as soon as it is parsed, with the
# document, the list's key, the index and the parsed value; what it returns is kept in the list instead.
EntrySink = Callable[[Document, str, int, object], object]


def parse_document(
    text: str, file: str, environ: Mapping[str, str], *, entry_sink: EntrySink | None = None
) -> Document:
    """Parse YAML text; raise ConfigError for syntax errors. Other problems are kept in `Document.issues`.

    `entry_sink` lets a large file's users and routes be turned into something smaller (their models) as
    they are parsed, so the whole parsed tree never exists at once. Issues it records go in `issues` of
    the document it is given. Files the event walker leaves to the node walker do not call it."""
    if _FAST_LOADER is not None:
        fast = _EventWalker(Document(file=file, data={}, text=text), environ, record_lines=False)
        fast.entry_sink = entry_sink
        try:
            fast.document.data = fast.convert_stream(text)
        except (_Unsupported, yaml.YAMLError):
            pass  # anchors, several documents, odd tags or a syntax error: the node walker below decides
        else:
            fast.document.issues = fast.issues + fast.document.issues
            return fast.document
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError([ConfigIssue(file, line, (), _explain_syntax(exc, text))]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(file, None, (), f"invalid YAML: {exc}")]) from None
    walker = _Walker(Document(file=file, data={}), environ)
    if root is not None:
        walker.document.data = walker.convert(root, ())
    walker.document.issues = walker.issues
    return walker.document


def _explain_syntax(exc: yaml.MarkedYAMLError, text: str) -> str:
    mark = exc.problem_mark
    if mark is not None:
        lines = text.splitlines()
        line = lines[mark.line] if mark.line < len(lines) else ""
        if "\t" in line[: len(line) - len(line.lstrip(" \t"))]:
            return (
                "invalid YAML: this line is indented with a tab character; YAML allows only spaces for "
                "indentation (replace the tab with spaces, and set your editor to insert spaces)"
            )
        # `tokens: [${TOKEN}]`: inside [ ] or { } a `{` starts a mapping, so the reference must be quoted.
        if "got '{'" in str(exc.problem) and (name := first_reference(line)) is not None:
            return f'invalid YAML: {exc.problem}: inside [ ] or {{ }} a {{ starts a mapping; quote it: "${{{name}}}"'
    return f"invalid YAML: {exc.problem}"


_STR_TAG = "tag:yaml.org,2002:str"


class _Walker:
    def __init__(self, document: Document, environ: Mapping[str, str]) -> None:
        self.document = document
        self.environ = environ
        self.issues: list[ConfigIssue] = []
        # Resolves scalar tags (int, bool, null, timestamps...) exactly as yaml.safe_load would.
        self.constructor = yaml.SafeLoader("")

    def convert(self, node: yaml.Node, path: Path) -> object:
        document = self.document
        document.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            result: dict[str, object] = {}
            for key_node, value_node in node.value:
                key_line = key_node.start_mark.line + 1
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.issues.append(ConfigIssue(document.file, key_line, path, "merge keys (<<) are not supported"))
                    continue
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str):
                    self.issues.append(ConfigIssue(document.file, key_line, path, "keys must be strings"))
                    continue
                if key in result:
                    self.issues.append(ConfigIssue(document.file, key_line, (*path, key), "duplicate key"))
                    continue
                result[key] = self.convert(value_node, (*path, key))
                document.lines[(*path, key)] = key_line  # errors point at the key, not its value
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        value = node.value if node.tag == _STR_TAG else self.construct(node, path, node.start_mark.line + 1)
        if isinstance(value, str) and "${" in value:
            return self.interpolate(value, path)
        return value

    def construct(self, node: yaml.ScalarNode, path: Path, line: int) -> object:
        """The scalar's value as PyYAML's SafeLoader makes it; an impossible one (`2001-13-45`, `!!int x`)
        is an issue at its line, not an exception."""
        try:
            return self.constructor.construct_object(node)
        except Exception:  # ValueError, KeyError, binascii.Error...: whatever the text makes PyYAML raise
            kind = node.tag.rsplit(":", 1)[-1]
            message = f"is not a valid {kind}: {node.value!r} (quote it if it is text)"
            self.issues.append(ConfigIssue(self.document.file, line, path, message))
            return node.value

    def interpolate(self, value: str, path: Path) -> str:
        result: Expansion = expand(value, self.environ)
        document = self.document
        if result.error is not None:
            self.issues.append(document.issue(path, result.error))
            return ""
        for name in result.unset:
            document.unset.append((path, name))
        if result.used:
            document.expanded[path] = value
            for name, text in result.used.items():
                if len(text) >= 4:  # shorter values would scrub ordinary words out of messages
                    document.secrets_seen.setdefault(text, "${" + name + "}")
        return result.text


# libyaml's event parser is ~20 times faster than composing PyYAML nodes (39 s -> 2 s for 100,000 users).
_FAST_LOADER: type[yaml.CSafeLoader] | None = getattr(yaml, "CSafeLoader", None)
_CONTAINER_END = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _plain_sequence(event: yaml.Event) -> bool:
    return type(event) is yaml.SequenceStartEvent and event.anchor is None


def _line(event: yaml.Event) -> int:
    return int(event.start_mark.line) + 1  # type: ignore[union-attr]


class _Unsupported(Exception):
    """Something the event walker leaves to the node walker (anchors, aliases, several documents)."""


class _EventWalker(_Walker):
    """The `_Walker`'s result (same values, issues and lines) straight from libyaml's events, without nodes."""

    def __init__(self, document: Document, environ: Mapping[str, str], *, record_lines: bool) -> None:
        super().__init__(document, environ)
        self.record_lines = record_lines
        self.lines: dict[Path, int] = {}
        # 100,000 users repeat the same few keys: one string each, not one per occurrence.
        self.keys: dict[str, str] = {}
        # A plain scalar whose first character starts no implicit type (bool, int, null, ...) is a string.
        self.implicit_starts = frozenset(self.constructor.yaml_implicit_resolvers)
        self.entry_sink: EntrySink | None = None
        if None in self.implicit_starts:
            raise _Unsupported("wildcard resolvers")

    def lines_of(self, text: str) -> dict[Path, int]:
        """Only for text this walker converted once already, so it cannot fail now."""
        self.convert_stream(text)
        return self.lines

    def convert_stream(self, text: str) -> object:
        assert _FAST_LOADER is not None
        parser = _FAST_LOADER(text)
        try:
            # None only after StreamEndEvent, which the walk never reads past.
            self.next_event = cast(Callable[[], yaml.Event], parser.get_event)
            self.expect(yaml.StreamStartEvent)
            event = self.next_event()
            if isinstance(event, yaml.StreamEndEvent):
                return {}
            if not isinstance(event, yaml.DocumentStartEvent):
                raise _Unsupported("no document")
            data = self.event_value(self.next_event(), ())
            self.expect(yaml.DocumentEndEvent)
            self.expect(yaml.StreamEndEvent)
            return data
        finally:
            parser.dispose()

    def expect(self, kind: type[yaml.Event]) -> None:
        if not isinstance(self.next_event(), kind):
            raise _Unsupported(kind.__name__)

    def event_value(self, event: yaml.Event, path: Path) -> object:
        if self.record_lines:
            self.lines[path] = event.start_mark.line + 1  # type: ignore[union-attr]
        kind = type(event)
        if kind is yaml.AliasEvent or getattr(event, "anchor", None) is not None:
            raise _Unsupported("anchor")
        if kind is yaml.ScalarEvent:
            return self.scalar(event, path)  # type: ignore[arg-type]
        if kind is yaml.SequenceStartEvent:
            items: list[object] = []
            while not isinstance(event := self.next_event(), yaml.SequenceEndEvent):
                items.append(self.child_value(event, path, len(items)))
            return items
        if kind is not yaml.MappingStartEvent:
            raise _Unsupported(kind.__name__)
        result: dict[str, object] = {}
        file = self.document.file
        next_event, keys, record_lines = self.next_event, self.keys, self.record_lines
        plain_starts = self.implicit_starts
        while (key_kind := type(key := next_event())) is not yaml.MappingEndEvent:
            if key_kind is not yaml.ScalarEvent or key.anchor is not None:  # type: ignore[attr-defined]
                if key_kind is yaml.AliasEvent or getattr(key, "anchor", None) is not None:
                    raise _Unsupported("anchor")
                self.issues.append(ConfigIssue(file, _line(key), path, "keys must be strings"))
                self.skip(key)
                self.skip(next_event())
                continue
            name: str = keys.setdefault(key.value, key.value)  # type: ignore[attr-defined]
            if (name == "<<" or key.tag is not None) and self.tag(key) == _MERGE_TAG:  # type: ignore[attr-defined,arg-type]
                self.issues.append(ConfigIssue(file, _line(key), path, "merge keys (<<) are not supported"))
                self.skip(next_event())
                continue
            if name in result:
                self.issues.append(ConfigIssue(file, _line(key), (*path, name), "duplicate key"))
                self.skip(next_event())
                continue
            value = next_event()
            if (
                type(value) is yaml.ScalarEvent
                and not record_lines
                and value.tag is None
                and value.anchor is None
                and (not value.implicit[0] or value.value[:1] not in plain_starts)
                and "${" not in value.value
            ):
                # The bulk of a large file: a string value (quoted, or plain and not a number, bool or null).
                result[name] = value.value
                continue
            sink = self.entry_sink
            if sink is not None and not path and name in ("users", "routes") and _plain_sequence(value):
                result[name] = self.sunk_entries(name, sink)
                continue
            result[name] = self.child_value(value, path, name)
            if record_lines:
                self.lines[(*path, name)] = _line(key)  # errors point at the key, not its value
        return result

    def sunk_entries(self, name: str, sink: EntrySink) -> list[object]:
        items: list[object] = []
        parent: Path = (name,)
        while not isinstance(event := self.next_event(), yaml.SequenceEndEvent):
            items.append(sink(self.document, name, len(items), self.child_value(event, parent, len(items))))
        return items

    def child_value(self, event: yaml.Event, parent: Path, key: str | int) -> object:
        # Most values are plain scalars whose path is never needed: build it only when it is.
        if (
            type(event) is yaml.ScalarEvent
            and not self.record_lines
            and event.anchor is None
            and "${" not in event.value
        ):
            return self.scalar(event, parent, key)
        return self.event_value(event, (*parent, key))

    def skip(self, event: yaml.Event) -> None:
        """Consume the rest of a node the node walker would not have looked into."""
        if type(event) is yaml.AliasEvent or getattr(event, "anchor", None) is not None:
            raise _Unsupported("anchor")
        depth = 1 if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent) else 0
        while depth:
            event = self.next_event()
            if type(event) is yaml.AliasEvent or getattr(event, "anchor", None) is not None:
                raise _Unsupported("anchor")
            if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                depth += 1
            elif isinstance(event, _CONTAINER_END):
                depth -= 1

    def tag(self, event: yaml.ScalarEvent) -> str:
        tag = event.tag
        if tag is not None and tag != "!":
            return tag
        if not event.implicit[0] or event.value[:1] not in self.implicit_starts:
            return _STR_TAG
        resolved: str = self.constructor.resolve(yaml.ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
        return resolved

    def scalar(self, event: yaml.ScalarEvent, path: Path, key: str | int | None = None) -> object:
        """`key`: when given, `path` is the parent's (the value's own path is built only if needed)."""
        tag = self.tag(event)
        if tag == _STR_TAG:
            value: object = event.value
        else:
            start: Any = event.start_mark  # libyaml's Mark: the same fields as PyYAML's
            node = yaml.ScalarNode(tag, event.value, start, event.end_mark, event.style)  # type: ignore[arg-type]
            value = self.construct(node, path if key is None else (*path, key), _line(event))
        if self.record_lines:
            return None
        if isinstance(value, str) and "${" in value:
            return self.interpolate(value, path)
        return value

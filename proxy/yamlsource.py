"""YAML text -> plain Python values, remembering the line of every key, and `${ENV}` interpolation.

Config errors must name file, line and key path, and PyYAML's constructors forget positions, so we
walk the composed node graph ourselves. That also lets us refuse duplicate keys, which PyYAML
silently lets the last one win.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml

Path = tuple[str | int, ...]

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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
    """A config that must not be served. Carries every issue found, not only the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


@dataclass
class Document:
    """Parsed YAML plus where each key path sits in the file."""

    file: str
    data: object
    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int | None:
        # A missing key is reported at the line of its closest existing parent.
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def issue(self, path: Path, message: str) -> ConfigIssue:
        return ConfigIssue(self.file, self.line_of(path), path, message)


def parse_document(text: str, file: str, environ: Mapping[str, str]) -> Document:
    """Parse YAML text; raise ConfigError for syntax errors, duplicate keys and unset env vars."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError([ConfigIssue(file, line, (), f"invalid YAML: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(file, None, (), f"invalid YAML: {exc}")]) from None
    walker = _Walker(Document(file=file, data={}), environ)
    if root is not None:
        walker.document.data = walker.convert(root, ())
    if walker.issues:
        raise ConfigError(walker.issues)
    return walker.document


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
        value = node.value if node.tag == _STR_TAG else self.constructor.construct_object(node)
        if isinstance(value, str) and "${" in value:
            return self.interpolate(value, path)
        return value

    def interpolate(self, value: str, path: Path) -> str:
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in self.environ:
                return self.environ[name]
            if default is not None:
                return default
            self.issues.append(self.document.issue(path, f"environment variable {name} is not set"))
            return ""

        return _ENV_REFERENCE.sub(substitute, value)

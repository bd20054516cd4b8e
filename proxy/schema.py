"""Typed, located reads of a YAML mapping: every wrong type or unknown key becomes a ConfigIssue.

Errors are collected, not raised, so `check` reports everything wrong with a file in one go.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from proxy.secret import Secret
from proxy.yamlsource import ConfigIssue, Document, Path

T = TypeVar("T")

_MISSING = object()


class Section:
    """A mapping at `path` in a document. Reading a key marks it known; `finish()` flags the rest."""

    def __init__(self, document: Document, issues: list[ConfigIssue], path: Path, data: object) -> None:
        self.document = document
        self.issues = issues
        self.path = path
        self.present = data is not None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.error(path, f"must be a mapping, got {_kind(data)}")
            data = {}
        self.data: dict[str, object] = data
        self._known: set[str] = set()

    def error(self, path: Path, message: str) -> None:
        self.issues.append(self.document.issue(path, message))

    def at(self, key: str) -> Path:
        return (*self.path, key)

    def raw(self, key: str, default: object = None) -> object:
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            return default
        self._known.add(key)
        return value

    def has(self, key: str) -> bool:
        return key in self.data

    def section(self, key: str) -> Section:
        return Section(self.document, self.issues, self.at(key), self.raw(key))

    def _typed(self, key: str, default: T, required: bool, check: Callable[[object], T | None], kind: str) -> T:
        value = self.raw(key, _MISSING)
        if value is _MISSING or value is None:
            if required:
                self.error(self.at(key), "is required")
            return default
        converted = check(value)
        if converted is None:
            self.error(self.at(key), f"must be {kind}, got {_kind(value)}")
            return default
        return converted

    def text(self, key: str, default: str = "", *, required: bool = False) -> str:
        value = self.data.get(key)
        if type(value) is str:  # the common case, read 1,000,000 times in a file of 100,000 users
            self._known.add(key)
            return value
        if value is None and not required and key not in self.data:  # the next most common: not set
            return default

        def check(value: object) -> str | None:
            # Unquoted numbers are a common slip for ids and phone numbers: accept them as text.
            if isinstance(value, bool):
                return None
            return str(value) if isinstance(value, str | int) else None

        return self._typed(key, default, required, check, "a string")

    def optional_str(self, key: str) -> str | None:
        return self.text(key) or None

    def flag(self, key: str, default: bool) -> bool:
        return self._typed(key, default, False, lambda v: v if isinstance(v, bool) else None, "true or false")

    def number(self, key: str, default: float, *, minimum: float = 0.0, maximum: float | None = None) -> float:
        def check(value: object) -> float | None:
            return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

        value = self._typed(key, default, False, check, "a number")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum:g} and {maximum:g}" if maximum is not None else f"at least {minimum:g}"
            self.error(self.at(key), f"must be {bound}, got {value:g}")
            return default
        return value

    def integer(self, key: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
        def check(value: object) -> int | None:
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        value = self._typed(key, default, False, check, "an integer")
        if value < minimum or (maximum is not None and value > maximum):
            self.error(self.at(key), f"must be between {minimum} and {maximum}, got {value}")
            return default
        return value

    def str_list(self, key: str) -> list[tuple[Path, str]]:
        """A string or a list of strings, each with its own path for precise errors."""
        value = self.raw(key)
        if value is None:
            return []
        if isinstance(value, str | int) and not isinstance(value, bool):
            return [(self.at(key), str(value))]
        if not isinstance(value, list):
            self.error(self.at(key), f"must be a string or a list of strings, got {_kind(value)}")
            return []
        items: list[tuple[Path, str]] = []
        for i, item in enumerate(value):
            if isinstance(item, str | int) and not isinstance(item, bool):
                items.append(((*self.at(key), i), str(item)))
            else:
                self.error((*self.at(key), i), f"must be a string, got {_kind(item)}")
        return items

    def secrets(self, key: str) -> tuple[Secret, ...]:
        # An empty value (an unset `${VAR:-}`) disables that secret rather than accepting "".
        return tuple(Secret(value) for _, value in self.str_list(key) if value)

    def choice(self, key: str, value: str, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            self.error(self.at(key), f"must be one of {', '.join(allowed)}, got {value!r}")

    def zone(self, key: str, default: str) -> ZoneInfo:
        name = self.text(key, default)
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            self.error(self.at(key), f"unknown IANA timezone {name!r} (e.g. America/New_York)")
            return ZoneInfo(default)

    def mapping(self, key: str) -> dict[str, object]:
        value = self.raw(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(self.at(key), f"must be a mapping, got {_kind(value)}")
            return {}
        return value

    def items(self, key: str) -> Iterator[tuple[Path, object]]:
        value = self.raw(key)
        if value is None:
            return
        if not isinstance(value, list):
            self.error(self.at(key), f"must be a list, got {_kind(value)}")
            return
        for i, item in enumerate(value):
            yield (*self.at(key), i), item

    def finish(self) -> None:
        for key in self.data:
            if key not in self._known:
                self.error(self.at(key), "unknown key")


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )

"""Parsed YAML -> model instances, with every problem located and explained.

A valid value takes one `msgspec.convert` call. Only when that fails does the walk below go key by key,
driven by the models' own type information, to report every problem (not only msgspec's first) in the
admin's words: the key path, what was expected, and a "did you mean" for misspelt keys and choices.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import types
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec

from proxy.config.models import Addresses, Secrets
from proxy.config.yamlsource import ConfigIssue, Document, Path
from proxy.secret import Secret

__all__ = ["INVALID", "Validator", "decode_hook", "did_you_mean", "kind_of"]


_PATTERNS = {"^/": "must start with /", "^https?://": "must be an http(s) URL"}


class _Invalid:
    def __repr__(self) -> str:
        return "INVALID"


INVALID: Any = _Invalid()


def decode_hook(kind: type, value: object) -> object:
    """How YAML values become the custom types above."""
    if kind is Secret:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return Secret(value)
    if kind is Secrets:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ValueError("must be a string or a list of strings")
        return Secrets(Secret(item) for item in items if item)
    if kind is Addresses:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ValueError("must be a string or a list of strings")
        return Addresses(_address(item.strip()) for item in items)
    raise NotImplementedError


def _address(value: str) -> str:
    if value != "*":
        try:
            # Exactly as uvicorn reads them: a network with host bits set would silently be a literal there.
            ipaddress.ip_network(value) if "/" in value else ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"must be IP addresses or networks (e.g. 10.0.0.0/8) or *, got {value!r}") from None
    return value


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """` (did you mean x?)` when one of `choices` is close to `word`, else ""."""
    folded = {choice.lower(): choice for choice in choices}
    if word.lower() in folded:
        return f" (did you mean {folded[word.lower()]}?)"
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def kind_of(value: object) -> str:
    if value is None:
        return "nothing"
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "true or false", int: "a number"}
    return names.get(type(value), "a number" if isinstance(value, float) else type(value).__name__)


class Validator:
    """Converts values to model types; records issues in `issues` instead of raising."""

    def __init__(self, document: Document, issues: list[ConfigIssue]) -> None:
        self.document = document
        self.issues = issues

    def error(self, path: Path, message: str) -> None:
        if not self.document.explained_by_unset(path):
            self.issues.append(self.document.issue(path, message))

    def convert(self, value: object, kind: Any, path: Path) -> Any:
        """`value` as `kind`, or INVALID after recording why not."""
        try:
            return msgspec.convert(value, kind, dec_hook=decode_hook)
        except msgspec.ValidationError as exc:
            first = str(exc)
        before = len(self.issues)
        result = self._explain(value, kind, path)
        if result is INVALID and len(self.issues) == before and not self.document.explained_by_unset(path, within=True):
            self.error(path, _plain(first))
        return result

    def _explain(self, value: object, kind: Any, path: Path) -> Any:
        meta: list[msgspec.Meta] = []
        if get_origin(kind) is Annotated:
            kind, *extra = get_args(kind)
            meta = [item for item in extra if isinstance(item, msgspec.Meta)]
        origin = get_origin(kind)
        if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            return self._struct(value, kind, path)
        if origin in (Union, types.UnionType):
            return self._union(value, get_args(kind), meta, path)
        if origin is list:
            if not isinstance(value, list):
                return self._wrong(path, "a list", value)
            items = [self.convert(item, get_args(kind)[0], (*path, index)) for index, item in enumerate(value)]
            return INVALID if INVALID in items else items
        if origin is dict:
            if not isinstance(value, dict):
                return self._wrong(path, "a mapping", value)
            converted = {key: self.convert(item, get_args(kind)[1], (*path, key)) for key, item in value.items()}
            return INVALID if INVALID in converted.values() else converted
        if origin is Literal:
            choices = [str(choice) for choice in get_args(kind)]
            shown = self.document.show(path, value)
            hint = did_you_mean(value, choices) if isinstance(value, str) else ""
            self.error(path, f"must be one of {', '.join(choices)}, got {shown}{hint}")
            return INVALID
        if kind is str:
            # Unquoted numbers are a common slip for ids and phone numbers: read them as the text written.
            if isinstance(value, int) and not isinstance(value, bool):
                return self._with_meta(str(value), meta, path)
            if not isinstance(value, str):
                return self._wrong(path, "a string", value)
            return self._with_meta(value, meta, path)
        if kind in (int, float):
            numeric = isinstance(value, int) and not isinstance(value, bool)
            if not (numeric or (kind is float and isinstance(value, float))):
                return self._wrong(path, "a whole number" if kind is int else "a number", value)
            return self._with_meta(value, meta, path)
        return INVALID

    def _wrong(self, path: Path, expected: str, value: object) -> Any:
        self.error(path, f"must be {expected}, got {kind_of(value)}")
        return INVALID

    def _with_meta(self, value: Any, meta: list[msgspec.Meta], path: Path) -> Any:
        for item in meta:
            if isinstance(value, str):
                if item.min_length and len(value) < item.min_length:
                    self.error(path, "must not be empty")
                    return INVALID
                if item.pattern and not re.search(item.pattern, value):
                    self.error(path, _PATTERNS.get(item.pattern, f"must match {item.pattern}"))
                    return INVALID
                continue
            low, high = item.ge, item.le
            if (low is not None and value < low) or (high is not None and value > high):
                if low is not None and high is not None:
                    bound = f"between {low:g} and {high:g}"
                else:
                    bound = f"at least {low:g}" if low is not None else f"at most {high:g}"
                self.error(path, f"must be {bound}, got {value:g}")
                return INVALID
        return value

    def _union(self, value: object, members: tuple[Any, ...], meta: list[msgspec.Meta], path: Path) -> Any:
        plain = [get_args(member)[0] if get_origin(member) is Annotated else member for member in members]
        if isinstance(value, int) and not isinstance(value, bool) and str in plain and int not in plain:
            return self._with_meta(str(value), meta, path)
        for member in members:
            bare = get_args(member)[0] if get_origin(member) is Annotated else member
            shaped = (
                (isinstance(bare, type) and issubclass(bare, msgspec.Struct) and isinstance(value, dict))
                or (get_origin(bare) is list and isinstance(value, list))
                or (get_origin(bare) is dict and isinstance(value, dict))
                or (get_origin(bare) is Literal and isinstance(value, str))
                or (bare in (int, float) and isinstance(value, int | float) and not isinstance(value, bool))
                or (bare is str and isinstance(value, str))
            )
            if shaped:
                return self.convert(value, Annotated[member, *meta] if meta else member, path)
        expected = " or ".join(dict.fromkeys(_expected(member) for member in plain if member is not type(None)))
        return self._wrong(path, expected, value)

    def _struct(self, value: object, kind: type[msgspec.Struct], path: Path) -> Any:
        if not isinstance(value, dict):
            return self._wrong(path, "a mapping", value)
        fields = {info.encode_name: info for info in msgspec.structs.fields(kind)}
        for key in value:
            if key not in fields:
                self.error((*path, key), f"unknown key{did_you_mean(str(key), list(fields))}")
        before = len(self.issues)
        arguments: dict[str, Any] = {}
        for name, info in fields.items():
            if name in value:
                arguments[info.name] = self.convert(value[name], info.type, (*path, name))
            elif info.required:
                self.error((*path, name), "is required")
        invalid = any(argument is INVALID for argument in arguments.values())
        if invalid or len(self.issues) != before or any(key not in fields for key in value):
            return INVALID
        try:
            return kind(**arguments)
        except (TypeError, ValueError) as exc:
            self.error(path, str(exc))
            return INVALID


def _expected(kind: Any) -> str:
    origin = get_origin(kind)
    if (isinstance(kind, type) and issubclass(kind, msgspec.Struct)) or origin is dict:
        return "a mapping"
    if origin is list:
        return "a list"
    if kind is bool:
        return "true or false"
    if kind in (int, float):
        return "a number"
    if origin is Literal:
        return "one of " + ", ".join(str(choice) for choice in get_args(kind))
    return "a string" if kind is str else getattr(kind, "__name__", str(kind))


def _plain(message: str) -> str:
    """msgspec's message without its `$.path` suffix (ours is more precise) and in our words."""
    text = message.split(" - at `$", 1)[0]
    if text.startswith("Expected `str` matching regex "):
        return "must match " + text.removeprefix("Expected `str` matching regex ")
    return text[:1].lower() + text[1:]

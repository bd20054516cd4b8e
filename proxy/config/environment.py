"""`${NAME}` and `${NAME:-default}` in config values, expanded from the environment.

A default may itself hold references (`${A:-${B}}`, `${A:-${B:-text}}`): they are expanded in turn.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Deep enough for any sensible chain of fallbacks, shallow enough that no value can recurse far.
MAX_DEPTH = 8


@dataclass
class Expansion:
    text: str = ""
    used: dict[str, str] = field(default_factory=dict)  # name -> the value it was replaced by
    unset: list[str] = field(default_factory=list)
    error: str | None = None


def expand(value: str, environ: Mapping[str, str]) -> Expansion:
    """Expand every reference in `value`. An unset variable without a default expands to "" and is
    listed in `unset`; a malformed reference sets `error` (which never contains a variable's value)."""
    result = Expansion()
    try:
        text, end = _expand(value, 0, environ, result, depth=0, closing=False)
    except _Malformed as exc:
        result.error = str(exc)
        return result
    assert end == len(value)
    result.text = text
    return result


def first_reference(text: str) -> str | None:
    """The name of the first `${NAME}` in `text` (for a message: never its value)."""
    start = text.find("${")
    found = _NAME.match(text, start + 2) if start >= 0 else None
    return found.group() if found is not None else None


class _Malformed(Exception):
    pass


def _expand(
    value: str, start: int, environ: Mapping[str, str], result: Expansion, *, depth: int, closing: bool
) -> tuple[str, int]:
    """Expand from `start` up to the end of `value` or, when `closing`, up to an unmatched `}`."""
    if depth > MAX_DEPTH:
        raise _Malformed(f"${{...}} references nested more than {MAX_DEPTH} deep")
    parts: list[str] = []
    position = start
    while position < len(value):
        char = value[position]
        if closing and char == "}":
            return "".join(parts), position
        if char == "$" and value.startswith("${", position):
            text, position = _reference(value, position + 2, environ, result, depth)
            parts.append(text)
            continue
        parts.append(char)
        position += 1
    if closing:
        raise _Malformed("a ${ is never closed with }")
    return "".join(parts), position


def _reference(value: str, start: int, environ: Mapping[str, str], result: Expansion, depth: int) -> tuple[str, int]:
    name_match = _NAME.match(value, start)
    if name_match is None:
        raise _Malformed("${ must be followed by a variable name, like ${NANGO_SECRET_KEY}")
    name = name_match.group()
    position = name_match.end()
    if value.startswith("}", position):
        if name in environ:
            result.used[name] = environ[name]
            return environ[name], position + 1
        result.unset.append(name)
        return "", position + 1
    if not value.startswith(":-", position):
        raise _Malformed(f"${{{name}...}}: after the name only }} or :-default may follow")
    # The default is expanded even when unused, so a malformed one is found before it is needed.
    unused = Expansion()
    default, position = _expand(
        value, position + 2, environ, result if name not in environ else unused, depth=depth + 1, closing=True
    )
    if name in environ:
        result.used[name] = environ[name]
        return environ[name], position + 1
    return default, position + 1

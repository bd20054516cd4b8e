"""The JSON Schema of the routing file, from the models: what editors validate and complete against.

`vapi-calendar-proxy schema` prints it; `config.schema.json` in the repository is a copy a test keeps
equal, and `docs/configuration.md` is generated from it (`python -m proxy.config.schema --docs`).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import msgspec
import orjson

from proxy.config.calendar import CalendarSettings
from proxy.config.models import Addresses, CalendarLayer, ConfigFile, IncludedFile, Secrets
from proxy.secret import Secret

__all__ = ["json_schema", "json_schema_text"]


def json_schema() -> dict[str, Any]:
    (main, _included), definitions = msgspec.json.schema_components((ConfigFile, IncludedFile), schema_hook=schema_hook)
    calendar = definitions.get(CalendarLayer.__name__, {}).get("properties", {})
    for name, info in CalendarSettings.__dataclass_fields__.items():
        # Calendar defaults live in CalendarSettings (levels above fill in unset keys): shown from there.
        if name in calendar and info.default is not dataclasses.MISSING:
            calendar[name]["default"] = info.default
    for definition in definitions.values():
        definition.pop("title", None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "vapi-calendar-proxy routing file",
        **main,
        "$defs": definitions,
    }


def schema_hook(kind: type) -> dict[str, Any]:
    if kind is Secret:
        return {"type": "string"}
    if kind is Secrets or kind is Addresses:
        return {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    raise NotImplementedError


def json_schema_text() -> str:
    return orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


if __name__ == "__main__":
    sys.stdout.write(json_schema_text())

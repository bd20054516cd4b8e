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
from proxy.config.tenants import MAX_TENANTS, TENANT_ID
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
    _describe_tool_server(definitions)
    _describe_agency(definitions)
    for definition in definitions.values():
        _accept_references(definition)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "vapi-calendar-proxy routing file (one business's, or an agency's with tenants)",
        "anyOf": [main, {"$ref": "#/$defs/AgencyFile"}],
        "$defs": definitions,
    }


def schema_hook(kind: type) -> dict[str, Any]:
    if kind is Secret:
        return {"type": "string"}
    if kind is Secrets or kind is Addresses:
        return {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    raise NotImplementedError


# A string holding a `${NAME}` or `${NAME:-default}` reference (proxy.config.environment): the loader checks
# the value it expands to, so an editor must not flag the reference itself (a pattern, an enum).
REFERENCE = r"\$\{[A-Za-z_][A-Za-z0-9_]*(\}|:-)"
_REFERENCE = {"type": "string", "pattern": REFERENCE}


def _accept_references(node: object) -> None:
    """Every string the file may constrain (a pattern, a choice of values) also accepts a `${VAR}` reference."""
    if isinstance(node, list):
        for item in node:
            _accept_references(item)
        return
    if not isinstance(node, dict):
        return
    for value in node.values():
        _accept_references(value)
    if "pattern" in node and node.get("type") == "string":
        node["anyOf"] = [{"pattern": node.pop("pattern")}, {"pattern": REFERENCE}]
    elif (choices := node.get("enum")) and all(isinstance(choice, str) for choice in choices):
        node["anyOf"] = [{"enum": node.pop("enum")}, _REFERENCE]


def _describe_tool_server(definitions: dict[str, Any]) -> None:
    """`calendar.tool_server` is Vapi's Server object, passed on as written: the keys `check` looks at are
    described (others pass), and its url is required only without `server.public_url`, as `check` says."""
    tool_server = definitions["GlobalCalendar"]["properties"]["tool_server"]
    tool_server["anyOf"] = [
        {
            "type": "object",
            "properties": {
                "url": {
                    "type": "string",
                    "pattern": "^https?://",
                    "description": "where Vapi sends the tools' tool-calls (default: server.public_url + server.path)",
                },
                "credentialId": {
                    "type": "string",
                    "minLength": 1,
                    "description": "the Vapi custom credential Vapi authenticates the tool-calls with",
                },
            },
        },
        {"type": "null"},
    ]
    definitions["ConfigFile"]["if"] = {
        "required": ["calendar"],
        "properties": {
            "calendar": {
                "required": ["tool_server"],
                "properties": {"tool_server": {"type": "object", "not": {"required": ["url"]}}},
            }
        },
    }
    definitions["ConfigFile"]["then"] = {
        "required": ["server"],
        "properties": {"server": {"required": ["public_url"], "properties": {"public_url": {"type": "string"}}}},
    }


def _describe_agency(definitions: dict[str, Any]) -> None:
    """An agency file (proxy.config.tenants): the deployment's version, server and redis, and `tenants`, each
    `{file: <path>}` or a whole config inline without the deployment's sections."""
    business = definitions["ConfigFile"]
    properties = business["properties"]
    deployment = ("server", "redis")
    definitions["TenantConfig"] = {
        "type": "object",
        "properties": {key: value for key, value in properties.items() if key not in deployment},
        "required": business.get("required", []),
        "additionalProperties": False,
        "description": "a tenant's config inline: a routing file as for one business, without server and redis",
    }
    definitions["TenantFile"] = {
        "type": "object",
        "properties": {"file": {"type": "string", "minLength": 1, "description": "relative to the agency file"}},
        "required": ["file"],
        "additionalProperties": False,
    }
    definitions["AgencyFile"] = {
        "type": "object",
        "properties": {
            **{key: properties[key] for key in ("version", *deployment)},
            "tenants": {
                "type": "object",
                "description": "the businesses served, by id (served at <server.path>/<id>)",
                "minProperties": 1,
                "maxProperties": MAX_TENANTS,
                "propertyNames": {"pattern": f"^{TENANT_ID.pattern}$"},
                "additionalProperties": {"anyOf": [{"$ref": "#/$defs/TenantFile"}, {"$ref": "#/$defs/TenantConfig"}]},
            },
        },
        "required": ["tenants"],
        "additionalProperties": False,
    }


def json_schema_text() -> str:
    return orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


if __name__ == "__main__":
    sys.stdout.write(json_schema_text())

"""Requests checked against Google's own Calendar v3 discovery document, the one `google-api-python-client`
ships (a test-only dependency): every query parameter must be one the method takes, with an allowed value
where the document lists them, and every body field one the request's schema has, at any depth.

Google ignores a body field it does not know, so a misspelt field would be dropped without a word; the fake
refuses it instead (`tests.google_fakes.FakeGoogle` answers 400 naming it).
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["request_problems"]

_PREFIX = "/proxy/calendar/v3/"


@cache
def document() -> dict[str, Any]:
    path = resources.files("googleapiclient") / "discovery_cache" / "documents" / "calendar.v3.json"
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _method(verb: str, path: str) -> dict[str, Any] | None:
    """The discovery method a Nango-proxied request names (by HTTP method and path template)."""
    doc = document()
    relative = path.removeprefix(_PREFIX)
    for resource in doc["resources"].values():
        for method in resource.get("methods", {}).values():
            pattern = re.sub(r"\{[^}]+\}", "[^/]+", method["path"])
            if method["httpMethod"] == verb and re.fullmatch(pattern, relative):
                found: dict[str, Any] = method
                return found
    return None


def request_problems(verb: str, path: str, query: list[tuple[str, str]], body: object) -> list[str]:
    """What in a request the discovery document does not allow: [] when it is all allowed."""
    method = _method(verb, path)
    if method is None:
        return [f"{verb} {path} is no Calendar v3 method"]
    allowed = method.get("parameters", {}) | document()["parameters"]
    problems = []
    for name, value in query:
        spec = allowed.get(name)
        if spec is None or spec.get("location") == "path":
            problems.append(f"{method['id']} takes no query parameter {name!r}")
        elif "enum" in spec and value not in spec["enum"]:
            problems.append(f"{method['id']}: {name}={value!r} is not one of {spec['enum']}")
    request = method.get("request")
    if request is not None and body is not None:
        problems += _fields(body, {"$ref": request["$ref"]}, request["$ref"])
    return problems


def _fields(value: object, schema: dict[str, Any], where: str) -> list[str]:
    if "$ref" in schema:
        schema = document()["schemas"][schema["$ref"]]
    if isinstance(value, dict):
        properties, extra = schema.get("properties"), schema.get("additionalProperties")
        problems = []
        for key, item in value.items():
            if properties is not None and key in properties:
                problems += _fields(item, properties[key], f"{where}.{key}")
            elif extra is not None:
                problems += _fields(item, extra, f"{where}.{key}")
            else:
                problems.append(f"{where} has no field {key!r}")
        return problems
    if isinstance(value, list) and "items" in schema:
        return [problem for item in value for problem in _fields(item, schema["items"], f"{where}[]")]
    return []

"""The JSON Schema editors use, the key reference in docs/configuration.md, and the models: kept equal."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from proxy.cli import main
from proxy.config.schema import json_schema, json_schema_text

ROOT = Path(__file__).resolve().parents[2]
DOCS = (ROOT / "docs" / "configuration.md").read_text()


def test_the_schema_in_the_repository_is_the_models_schema() -> None:
    # After changing a model: python -m proxy.config.schema > config.schema.json
    assert (ROOT / "config.schema.json").read_text() == json_schema_text()


def test_schema_command_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json_schema_text())
    assert json_schema()["anyOf"] == [{"$ref": "#/$defs/ConfigFile"}, {"$ref": "#/$defs/AgencyFile"}]


def test_the_example_points_editors_at_the_schema() -> None:
    first = (ROOT / "config.example.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=./config.schema.json"


def _properties(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return _properties(schema, schema["$defs"][node["$ref"].rsplit("/", 1)[1]])
    for option in node.get("anyOf", []):
        if "$ref" in option:
            return _properties(schema, option)
    if node.get("type") == "array" and "items" in node:
        return _properties(schema, node["items"])
    return dict(node.get("properties", {}))


def schema_keys() -> dict[str, dict[str, Any]]:
    """Documented section -> its keys (sub-sections dotted, as the tables write them) and their schema."""
    schema = json.loads(json_schema_text())
    top = _properties(schema, schema)
    sections: dict[str, dict[str, Any]] = {"Top level": top}
    for name in ("server", "nango", "redis", "calendar"):
        sections[name] = _properties(schema, top[name])
    tag_routing = sections["nango"]
    sections["nango.tag_routing"] = _properties(schema, tag_routing["tag_routing"])
    auth = _properties(schema, top["auth"])
    sections["auth"] = {"vapi_secrets": auth["vapi_secrets"]}
    for method in ("bearer", "hmac"):
        for key, value in _properties(schema, auth[method]).items():
            sections["auth"][f"{method}.{key}"] = value
    sections["users[]"] = _properties(schema, top["users"])
    sections["routes[]"] = _properties(schema, top["routes"])
    return sections


def documented_keys() -> dict[str, dict[str, str]]:
    """Section heading -> key -> the default column (or "" in tables without one)."""
    tables: dict[str, dict[str, str]] = {}
    section = None
    for line in DOCS.splitlines():
        if line.startswith("#"):
            heading = re.match(r"#+ (?:`([^`]+)`|(Top level))", line)
            section = (heading.group(1) or heading.group(2)) if heading else None
            continue
        if section is None or not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        keys = re.findall(r"`([^`]+)`", cells[0])
        defaults = [part.strip() for part in cells[1].split(" / ")] if len(cells) == 3 else []
        for index, key in enumerate(keys):
            default = defaults[index] if len(defaults) == len(keys) else (defaults[0] if defaults else "")
            tables.setdefault(section, {})[key] = default
    return tables


def test_every_key_of_the_schema_is_documented_and_every_documented_key_exists() -> None:
    documented = documented_keys()
    for section, keys in schema_keys().items():
        assert set(documented.get(section, {})) == set(keys), section


def _written(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[]" if not value else str(value)
    return str(value)


def test_documented_defaults_are_the_models_defaults() -> None:
    documented = documented_keys()
    checked = 0
    for section, keys in schema_keys().items():
        for key, node in keys.items():
            shown = documented[section][key].strip("`")
            if "default" not in node or node["default"] is None or shown in ("", "none", "empty", "off", "(built in)"):
                continue
            default = node["default"]
            if isinstance(default, int | float) and not isinstance(default, bool):
                assert float(shown) == float(default), f"{section}.{key}"
            elif shown != '""':
                assert shown.lower() == _written(default).lower(), f"{section}.{key}"
            checked += 1
    assert checked >= 45


def test_fallback_fields_are_documented() -> None:
    schema = json.loads(json_schema_text())
    fields = schema["$defs"]["FallbackModel"]["properties"]
    assert "Each is `{" + ", ".join(fields) + "}`" in DOCS


def schema_errors(document: object) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads((ROOT / "config.schema.json").read_text()))
    return [error.message for error in validator.iter_errors(document)]


def test_the_example_validates_against_the_schema() -> None:
    import jsonschema
    import yaml

    jsonschema.Draft202012Validator.check_schema(json.loads((ROOT / "config.schema.json").read_text()))
    example = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    assert example["nango"]["base_url"] == "${NANGO_BASE_URL:-https://api.nango.dev}"
    assert schema_errors(example) == []


MINIMAL = {"templates": {"default": {"model": {"provider": "openai", "model": "gpt-4o"}}}}


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("nango", "base_url", "${NANGO_BASE_URL}"),
        ("nango", "base_url", "${NANGO_BASE_URL:-https://api.nango.dev}"),
        ("server", "path", "${VAPI_PATH:-/vapi}"),
        ("server", "public_url", "${PUBLIC_URL}"),
        ("calendar", "mode", "${CALENDAR_MODE:-proxy}"),
        ("calendar", "declare", "${DECLARE}"),
    ],
)
def test_a_reference_is_accepted_in_a_constrained_string(section: str, key: str, value: str) -> None:
    assert schema_errors({**MINIMAL, section: {key: value}}) == []


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [("nango", "base_url", "ftp://nango"), ("server", "path", "vapi"), ("calendar", "mode", "nativ")],
)
def test_a_constrained_string_is_still_checked(section: str, key: str, value: str) -> None:
    assert schema_errors({**MINIMAL, section: {key: value}}) != []


@pytest.mark.parametrize(
    ("server", "tool_server"),
    [
        ({"public_url": "https://proxy.example.com"}, {"credentialId": "cred-1"}),
        ({}, {"credentialId": "cred-1"}),
        ({}, {"url": "https://tools.example.com/vapi", "credentialId": "cred-1"}),
        ({"public_url": "https://proxy.example.com"}, {"url": "ftp://tools.example.com"}),
        ({"public_url": "https://proxy.example.com"}, {"credentialId": ""}),
        ({"public_url": "https://proxy.example.com"}, {"url": "${TOOLS_URL}", "timeoutSeconds": 15}),
    ],
)
def test_check_and_the_schema_agree_on_the_tool_server(
    server: dict[str, str],
    tool_server: dict[str, object],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import yaml

    monkeypatch.setenv("TOOLS_URL", "https://tools.example.com/vapi")

    document = {
        **MINIMAL,
        "auth": {"vapi_secrets": ["s3cret-value-123"]},
        "nango": {"secret_key": "nango-key-1"},
        "server": server,
        "calendar": {"mode": "proxy", "tool_server": tool_server},
        "users": [{"id": "u1", "name": "One", "connection_id": "conn-1"}],
        "routes": [{"to": "+14155550100", "user": "u1"}],
    }
    config = tmp_path / "routing.yaml"
    config.write_text(yaml.safe_dump(document))
    checked = main(["check", "--config", str(config)]) == 0
    assert checked == (schema_errors(document) == []), capsys.readouterr().err


def test_an_agency_file_and_its_tenant_files_validate_against_the_schema(tmp_path: Path) -> None:
    """What editors see for agency mode: the agency file of the tests (one tenant in a file, one inline) and
    the tenant's own file validate; what `check` would refuse in them is flagged."""
    import yaml

    from proxy.config import load_deployment
    from tests.helpers import write_agency

    agency_path = write_agency(tmp_path)
    assert load_deployment(str(agency_path)).errors == {}  # what the schema accepts here, check accepts too
    agency = yaml.safe_load(agency_path.read_text())
    assert schema_errors(agency) == []
    assert schema_errors(yaml.safe_load((tmp_path / "tenants" / "acme.yaml").read_text())) == []
    bad_id = {**agency, "tenants": {"Acme Corp": agency["tenants"]["acme"]}}
    with_server = {**agency, "tenants": {"bobs": {**agency["tenants"]["bobs"], "server": {"path": "/x"}}}}
    file_and_more = {**agency, "tenants": {"acme": {"file": "tenants/acme.yaml", "users": []}}}
    mixed = {**MINIMAL, "tenants": agency["tenants"]}  # one business's keys beside tenants
    for document in (bad_id, with_server, file_and_more, mixed, {**agency, "tenants": {}}):
        assert schema_errors(document), document

"""Agency files: tenants inline or in their own files, each checked on its own (proxy.config.tenants)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import main
from proxy.config import Agency, Config, ConfigError, load_deployment
from tests.helpers import ACME_FILE, AGENCY_FILE, BOBS_SECRET, SHARED_NUMBER, write_agency


def agency_at(path: Path, running: Agency | None = None) -> Agency:
    loaded = load_deployment(path, {}, running=running)
    assert isinstance(loaded, Agency)
    return loaded


def test_two_tenants_share_a_user_id_and_a_number_and_stay_two_businesses(tmp_path: Path) -> None:
    agency = agency_at(write_agency(tmp_path))
    assert sorted(agency.tenants) == ["acme", "bobs"] and not agency.errors
    acme, bobs = agency.tenants["acme"], agency.tenants["bobs"]
    assert (acme.tenant, bobs.tenant) == ("acme", "bobs")
    assert acme.file == str(tmp_path / "tenants" / "acme.yaml") and bobs.file == str(tmp_path / "agency.yaml")
    # Each is addressed by its own paths; its tools are called back on them.
    assert (acme.server.path, acme.server.webhook_path) == ("/vapi/acme", "/nango/webhook/acme")
    assert (bobs.server.path, bobs.server.webhook_path) == ("/vapi/bobs", "/nango/webhook/bobs")
    assert acme.server.public_url == bobs.server.public_url == "https://calls.example.com"
    acme_route, bobs_route = acme.routing.by_to[SHARED_NUMBER], bobs.routing.by_to[SHARED_NUMBER]
    assert (acme_route.user.name, bobs_route.user.name) == ("Ada Acme", "Bob Bobs")
    assert [str(s) for s in acme.auth.shared_secrets] != [str(s) for s in bobs.auth.shared_secrets]
    assert acme.nango.secret_key != bobs.nango.secret_key
    assert "acme-vapi-secret" not in repr(agency) and "acme-vapi-secret" not in repr(acme)


def test_a_config_without_tenants_loads_as_it_always_did(tmp_path: Path) -> None:
    single = tmp_path / "tenants" / "acme.yaml"
    write_agency(tmp_path)
    config = load_deployment(single, {})
    assert isinstance(config, Config) and config.tenant is None and config.server.path == "/vapi"


def test_an_invalid_tenant_is_reported_with_file_and_line_and_the_others_load(tmp_path: Path) -> None:
    agency = agency_at(
        write_agency(
            tmp_path,
            AGENCY_FILE.replace("timezone: Europe/London", "timezone: Europe/Lundon"),
            ACME_FILE.replace("user: u1}", "user: nobody}") + "server: {deadline_seconds: 2}\n",
        )
    )
    assert agency.tenants == {} and sorted(agency.errors) == ["acme", "bobs"]
    shown = [str(issue) for issue in agency.issues]
    acme_file, agency_file = tmp_path / "tenants" / "acme.yaml", tmp_path / "agency.yaml"
    assert f"{acme_file}:16: routes[0].user: names no user: 'nobody'" in shown
    assert any(line.startswith(f"{acme_file}:17: server: is set for every tenant in the agency file") for line in shown)
    assert f"{agency_file}:20: tenants.bobs.users[0].timezone: unknown IANA timezone 'Europe/Lundon'" in " ".join(shown)
    only_bobs = agency_at(write_agency(tmp_path, AGENCY_FILE.replace("Europe/London", "Europe/Lundon")))
    assert sorted(only_bobs.tenants) == ["acme"] and sorted(only_bobs.errors) == ["bobs"]


@pytest.mark.parametrize(
    ("agency", "message"),
    [
        (AGENCY_FILE.replace("  acme:\n", "  Acme Corp:\n"), "tenants.Acme Corp: is not a tenant id"),
        (
            AGENCY_FILE + "templates: {}\n",
            "set it in each tenant's config",
        ),
        (AGENCY_FILE.replace("public_url: https", "public_url: ftp"), "server.public_url"),
        ("tenants: {}\n", "tenants: must be a mapping of tenant ids to their configs"),
    ],
)
def test_a_broken_agency_file_is_refused_whole(tmp_path: Path, agency: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_deployment(write_agency(tmp_path, agency), {})
    assert message in str(refused.value) and f"{tmp_path / 'agency.yaml'}:" in str(refused.value)


def test_a_tenant_file_with_more_than_file_is_refused(tmp_path: Path) -> None:
    agency = agency_at(write_agency(tmp_path, AGENCY_FILE.replace("file: tenants/acme.yaml", "{file: x, auth: {}}")))
    assert "acme" in agency.errors and "has only `file`" in str(agency.errors["acme"])


def test_a_reload_reuses_each_unchanged_tenant_and_rebuilds_the_edited_one(tmp_path: Path) -> None:
    path = write_agency(tmp_path)
    first = agency_at(path)
    (tmp_path / "tenants" / "acme.yaml").write_text(ACME_FILE.replace("Ada Acme", "Ada Acme-Smith"))
    second = agency_at(path, running=first)
    assert second.tenants["bobs"] is first.tenants["bobs"]
    assert second.tenants["acme"].users["u1"].name == "Ada Acme-Smith"
    path.write_text(AGENCY_FILE.replace("Bob Bobs", "Robert Bobs"))
    third = agency_at(path, running=second)
    assert third.tenants["acme"] is second.tenants["acme"]
    assert third.tenants["bobs"].users["u1"].name == "Robert Bobs"


def test_check_validates_every_tenant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_agency(tmp_path)
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "tenant acme (" in out and "tenant bobs (" in out and "2/2 tenants ok" in out
    path.write_text(AGENCY_FILE.replace("Europe/London", "Europe/Lundon"))
    (tmp_path / "tenants" / "acme.yaml").write_text(ACME_FILE.replace("user: u1}", "user: nobody}"))
    assert main(["check", "--config", str(path)]) == 1
    captured = capsys.readouterr()
    assert f"error: {tmp_path / 'tenants' / 'acme.yaml'}:16: routes[0].user: names no user" in captured.err
    assert f"error: {path}:20: tenants.bobs.users[0].timezone: unknown IANA timezone" in captured.err
    assert "0/2 tenants ok" in captured.out


def test_resolve_takes_a_tenant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    path = str(write_agency(tmp_path))
    assert main(["resolve", "--config", path, "--tenant", "bobs", "--to", SHARED_NUMBER]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["user"] == "u1" and "Bob's" in report["response"]["assistant"]["firstMessage"]
    assert report["route_source"] == f"{path}:22 (tenants.bobs.routes[0].to)"
    assert main(["resolve", "--config", path, "--tenant", "acme", "--to", SHARED_NUMBER]) == 0
    assert "Acme" in json.loads(capsys.readouterr().out)["response"]["assistant"]["firstMessage"]
    assert main(["resolve", "--config", path, "--to", SHARED_NUMBER]) == 1
    assert "give --tenant (one of acme, bobs)" in capsys.readouterr().err
    assert main(["resolve", "--config", path, "--tenant", "zed", "--to", SHARED_NUMBER]) == 1
    assert "no tenant 'zed'" in capsys.readouterr().err
    single = str(tmp_path / "tenants" / "acme.yaml")
    assert main(["resolve", "--config", single, "--tenant", "acme", "--to", SHARED_NUMBER]) == 1
    assert "has no tenants" in capsys.readouterr().err


def test_serve_starts_an_agency_whole_in_one_worker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_agency(tmp_path, AGENCY_FILE.replace("Europe/London", "Europe/Lundon"))
    assert main(["serve", "--config", str(path), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "tenants.bobs.users[0].timezone: unknown IANA timezone" in err and "1 tenant(s) invalid" in err
    path = write_agency(tmp_path, AGENCY_FILE.replace(f"vapi_secrets: {BOBS_SECRET}", "vapi_secrets: []"))
    assert main(["serve", "--config", str(path), "--port", "0"]) == 1
    assert "tenants.bobs.auth: no Vapi authentication configured" in capsys.readouterr().err
    assert main(["serve", "--config", str(write_agency(tmp_path)), "--workers", "2"]) == 1
    assert "one worker per replica" in capsys.readouterr().err

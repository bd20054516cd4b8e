"""Reloads: any invalid file is refused visibly; each section takes effect everywhere or waits for a restart;
included files are watched like the main one."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from proxy.app import create_app
from proxy.config import Config, load_config
from proxy.metrics import Metrics
from proxy.runtime import Runtime
from tests.helpers import VAPI_SECRET, serving, vapi_sample
from tests.nango_fakes import connection_json, sample
from tests.routing_files import NUMBER, replace_file, routing_yaml

pytestmark = pytest.mark.anyio

SECRET = "nango-secret-NEVER-SHOWN-42"
AUTH = {"X-Vapi-Secret": VAPI_SECRET}


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAPI_SERVER_SECRET", VAPI_SECRET)
    monkeypatch.setenv("NANGO_SECRET_KEY", SECRET)


def nango(request: httpx.Request) -> httpx.Response:
    user = request.url.params.get("tags[end_user_id]", "x")
    return httpx.Response(200, json={"connections": [connection_json(f"conn-{user}", user)]})


@contextlib.asynccontextmanager
async def watched(path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(nango))
    app = create_app(load_config(path), metrics=Metrics(), http_client=http, config_path=str(path))
    async with http, serving(app) as client:
        yield client, app.state.runtime


def call(number: str = NUMBER) -> bytes:
    body = vapi_sample("assistant-request.pstn")
    body["message"]["phoneNumber"] = {"id": "pn-1", "number": number}
    body["message"]["call"]["phoneNumberId"] = "pn-1"
    return json.dumps(body).encode()


async def test_an_invalid_value_on_reload_is_refused_counted_and_shown_without_its_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Today's ValueErrors (an enum typo, an empty calendar_id) and a secret quoted in an error.
    path = tmp_path / "routing.yaml"
    path.write_text(routing_yaml("A"))
    broken = routing_yaml("B") + 'calendar: {mode: nativ, calendar_id: ""}\n'
    broken += 'fallbacks:\n  error: {action: transfer, number: "${NANGO_SECRET_KEY}"}\n'
    async with watched(path) as (client, runtime):
        assert runtime.watcher is not None
        replace_file(path, broken)
        with caplog.at_level(logging.INFO):
            assert await runtime.watcher.reload("test") == "invalid"
        assert sample(runtime.metrics, "config_reloads", result="invalid") == 1
        assert runtime.metrics.registry.get_sample_value("vapi_proxy_config_file_invalid") == 1
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and SECRET not in ready.text
        assert ready.json()["config_error"]["errors"] == 3
        logged = "\n".join(str(getattr(record, "fields", "")) + record.getMessage() for record in caplog.records)
        assert "calendar.mode: must be one of native, proxy, got 'nativ'" in logged
        assert "fallbacks.error.number: is not a phone number: ${NANGO_SECRET_KEY}" in logged
        assert SECRET not in logged
        answer = await client.post("/vapi", content=call(), headers=AUTH)
        assert answer.json()["assistant"]["firstMessage"] == "[A] You reached Alice Adams."


def _edit(section: str, text: str) -> str:
    """routing_yaml("A") with one setting changed."""
    edits: dict[str, Callable[[str], str]] = {
        "server.path": lambda t: t.replace("server:\n", "server:\n  path: /v2\n"),
        "server.deadline_seconds": lambda t: t.replace("server:\n", "server:\n  deadline_seconds: 3\n"),
        "server.max_connections": lambda t: t.replace("server:\n", "server:\n  max_connections: 10\n"),
        "nango.base_url": lambda t: t.replace("https://nango.test", "https://other-nango.test"),
        "nango.webhook_signing_keys": lambda t: t.replace("nango:\n", "nango:\n  webhook_signing_keys: [k2]\n"),
        "redis.url": lambda t: t + "redis:\n  url: rediss://proxy:pw-never-shown@cache.internal:6380/0\n",
        "redis.call_timeout_seconds": lambda t: t + "redis: {call_timeout_seconds: 0.1}\n",
        "auth": lambda t: t.replace('["${VAPI_SERVER_SECRET}"]', '["${VAPI_SERVER_SECRET}", another-secret]'),
        "templates": lambda t: t.replace("model: gpt-4o", "model: gpt-4o-mini"),
        "variables": lambda t: t.replace('edition: "A"', 'edition: "A2"'),
        "timezone": lambda t: t + "timezone: Europe/Berlin\n",
        "calendar": lambda t: t + "calendar: {declare: tool_ids, tool_ids: [t-1]}\n",
        "fallbacks": lambda t: t + "fallbacks:\n  no_calendar: {action: reject, message: Bye}\n",
        "users": lambda t: t.replace("name: Alice Adams", "name: Alice Smith"),
        "routes": lambda t: t.replace('"+1 650 555 0144"', '"+1 650 555 0145"'),
    }
    return edits[section](text)


EFFECT: dict[str, Callable[[Config], object]] = {
    "server.path": lambda c: c.server.path,
    "server.deadline_seconds": lambda c: c.server.deadline_seconds,
    "server.max_connections": lambda c: c.server.max_connections,
    "nango.base_url": lambda c: c.nango.base_url,
    "nango.webhook_signing_keys": lambda c: c.nango.webhook_signing_keys,
    "redis.url": lambda c: c.redis.url,
    "redis.call_timeout_seconds": lambda c: c.redis.call_timeout_seconds,
    "auth": lambda c: c.auth.shared_secrets,
    "templates": lambda c: c.templates,
    "variables": lambda c: c.variables,
    "timezone": lambda c: c.timezone,
    "calendar": lambda c: c.routes[0].calendar,
    "fallbacks": lambda c: c.routes[0].fallbacks,
    "users": lambda c: c.users["alice"],
    "routes": lambda c: sorted(c.routing.by_to),
}
RESTART_ONLY = {
    "server.path",
    "server.max_connections",
    "nango.base_url",
    # The shared state connects once, at start (proxy.app): the whole section waits for a restart.
    "redis.url",
    "redis.call_timeout_seconds",
}


@pytest.mark.parametrize("section", sorted(EFFECT))
def test_each_section_takes_effect_on_reload_or_waits_whole_for_a_restart(tmp_path: Path, section: str) -> None:
    running = load_config(_write(tmp_path / "a.yaml", routing_yaml("A")))
    edited = _edit(section, routing_yaml("A"))
    fresh = load_config(_write(tmp_path / "b.yaml", edited))
    reloaded = load_config(_write(tmp_path / "c.yaml", edited), running=running)
    effect = EFFECT[section]
    assert effect(fresh) != effect(running)  # the edit changes the setting
    if section in RESTART_ONLY:
        assert effect(reloaded) == effect(running) and reloaded.restart_needed == (section,)
    else:
        assert effect(reloaded) == effect(fresh) and reloaded.restart_needed == ()


async def test_a_new_server_path_waits_for_a_restart_and_calls_keep_working(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: the route stayed on /vapi while HMAC {url} and the proxy-mode tool URL used /v2.
    path = tmp_path / "routing.yaml"
    path.write_text(routing_yaml("A"))
    async with watched(path) as (client, runtime):
        assert runtime.watcher is not None
        replace_file(path, _edit("server.path", routing_yaml("B")))
        with caplog.at_level(logging.WARNING):
            assert await runtime.watcher.reload("test") == "ok"
        assert runtime.config.server.path == "/vapi"
        answer = await client.post("/vapi", content=call(), headers=AUTH)
        assert answer.json()["assistant"]["firstMessage"] == "[B] You reached Bob Brown."
        assert (await client.post("/v2", content=call(), headers=AUTH)).status_code == 404
        waiting = [r for r in caplog.records if "until a restart" in r.getMessage()]
        assert [getattr(r, "fields", {}).get("keys") for r in waiting] == [["server.path"]]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _split(text: str) -> tuple[str, str]:
    """routing_yaml() as a main file that includes users/*.yaml, and one included file."""
    main, users = text.split("users:\n", 1)
    return main + "include: [users/*.yaml]\n", "users:\n" + users


async def test_included_files_are_loaded_watched_and_located(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    main_text, users_text = _split(routing_yaml("A"))
    path.write_text(main_text)
    (tmp_path / "users").mkdir()
    included = tmp_path / "users" / "a.yaml"
    included.write_text(users_text)
    async with watched(path) as (client, runtime):
        assert runtime.watcher is not None
        assert runtime.config.files == (str(path), str(included))
        answer = await client.post("/vapi", content=call(), headers=AUTH)
        assert answer.json()["assistant"]["firstMessage"] == "[A] You reached Alice Adams."

        included.write_text(users_text.replace("Alice Adams", "Alice Smith"))
        assert await runtime.watcher._changed()
        assert await runtime.watcher.reload("test") == "ok"
        answer = await client.post("/vapi", content=call(), headers=AUTH)
        assert answer.json()["assistant"]["firstMessage"] == "[A] You reached Alice Smith."

        more = tmp_path / "users" / "b.yaml"
        more.write_text("users:\n  - {id: erin, name: Erin, timezone: Mars/Base}\n")
        assert await runtime.watcher._changed()  # a new file matching the glob
        assert await runtime.watcher.reload("test") == "invalid"
        assert runtime.config_error is not None
        assert [str(issue) for issue in runtime.config_error.issues] == [
            f"{more}:2: users[0].timezone: unknown IANA timezone 'Mars/Base' (e.g. America/New_York)"
        ]
        more.write_text("users:\n  - {id: erin, name: Erin}\nroutes:\n  - {to: '+1 650 555 0177', user: alice}\n")
        assert await runtime.watcher.reload("test") == "ok"
        assert runtime.config.routing.by_to["+16505550177"].user.id == "alice"


def test_an_included_file_holds_users_and_routes_only(tmp_path: Path) -> None:
    main_text, users_text = _split(routing_yaml("A"))
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "a.yaml").write_text(users_text + "server: {path: /x}\n")
    path = _write(tmp_path / "routing.yaml", main_text)
    with pytest.raises(Exception) as info:
        load_config(path)
    assert [str(issue) for issue in info.value.issues] == [  # type: ignore[attr-defined]
        f"{tmp_path / 'users' / 'a.yaml'}:9: server: unknown key: an included file holds users and routes only"
    ]


def projected(directory: Path, files: dict[str, str]) -> None:
    """A projected ConfigMap volume as the kubelet lays it out and updates it: every file in a timestamped
    directory, `..data` swapped to it atomically, top-level names as symlinks through `..data`."""
    import os

    directory.mkdir(parents=True, exist_ok=True)
    version = directory / f"..2026_11_29_{len(list(directory.glob('..2*'))):04d}"
    for name, text in files.items():
        (version / name).parent.mkdir(parents=True, exist_ok=True)
        (version / name).write_text(text)
    link = directory / "..data_tmp"
    link.symlink_to(version.name)
    os.replace(link, directory / "..data")
    for top in {name.split("/")[0] for name in files}:
        if not (directory / top).is_symlink():
            (directory / top).symlink_to(Path("..data") / top)


async def test_users_from_several_configmaps_in_a_projected_volume_reload_on_a_swap(tmp_path: Path) -> None:
    main_text, users_text = _split(routing_yaml("A"))
    mount = tmp_path / "etc"
    projected(mount, {"config.yaml": main_text, "users/000.yaml": users_text})
    async with watched(mount / "config.yaml") as (client, runtime):
        assert runtime.watcher is not None
        answer = await client.post("/vapi", content=call(), headers=AUTH)
        assert answer.json()["assistant"]["firstMessage"] == "[A] You reached Alice Adams."
        projected(mount, {"config.yaml": main_text, "users/000.yaml": users_text.replace("Alice Adams", "Alice B")})
        assert await runtime.watcher._changed()
        assert await runtime.watcher.reload("test") == "ok"
        answer = await client.post("/vapi", content=call(), headers=AUTH)
        assert answer.json()["assistant"]["firstMessage"] == "[A] You reached Alice B."


def test_a_reload_shares_what_did_not_change_with_the_running_snapshot(tmp_path: Path) -> None:
    running = load_config(_write(tmp_path / "a.yaml", routing_yaml("A")))
    edited = routing_yaml("A").replace("name: Alice Adams", "name: Alice Smith")
    reloaded = load_config(_write(tmp_path / "a.yaml", edited), running=running)
    assert reloaded.users["dave"] is running.users["dave"]
    assert reloaded.routing.by_to["+16505550144"] is running.routing.by_to["+16505550144"]
    alice = reloaded.routing.by_to[NUMBER]
    assert alice is not running.routing.by_to[NUMBER] and alice.user.name == "Alice Smith"
    # A global change reaches every route: nothing stale is shared.
    moved = load_config(_write(tmp_path / "a.yaml", edited.replace('edition: "A"', 'edition: "C"')), running=reloaded)
    assert all(route.variables["edition"] == "C" for route in moved.routes)
    assert moved.routing.by_to["+16505550144"] is not reloaded.routing.by_to["+16505550144"]
    # What a global edit leaves alone stays shared: route names and keys, users and their strings (a reload
    # of 100,000 users holds the running snapshot plus what changed, not two copies).
    before, after = reloaded.routing.by_to["+16505550144"], moved.routing.by_to["+16505550144"]
    assert after.keys is before.keys and after.name is before.name and after.user is before.user
    alice_before, alice_after = reloaded.users["alice"], moved.users["alice"]
    assert alice_after is alice_before and alice_after.name is alice_before.name

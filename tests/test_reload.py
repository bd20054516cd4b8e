from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.app import create_app
from proxy.cli import main
from proxy.config import config_version, load_config
from proxy.metrics import Metrics
from proxy.reload import fingerprint
from proxy.runtime import Runtime
from tests.helpers import VAPI_SECRET, eventually, serving, vapi_sample
from tests.nango_fakes import connection_json, sample
from tests.routing_files import EDITIONS, NUMBER, kubernetes_mount, kubernetes_swap, replace_file, routing_yaml

pytestmark = pytest.mark.anyio

AUTH = {"X-Vapi-Secret": VAPI_SECRET}
# Two issues, on lines 22 and 26 of routing_yaml(), so the error must name each file:line.
INVALID = (
    routing_yaml("A")
    .replace("timezone: Europe/Paris", "timezone: Mars/Olympus")
    .replace("user: dave}", "user: nobody}")
)


@pytest.fixture(autouse=True)
def vapi_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAPI_SERVER_SECRET", VAPI_SECRET)


class FakeNango:
    """Nango answering each user's lookup with `conn-<user>`, after a short random delay."""

    def __init__(self) -> None:
        self.lookups: Counter[str] = Counter()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        user = request.url.params["tags[end_user_id]"]
        self.lookups[user] += 1
        await asyncio.sleep(random.uniform(0, 0.003))
        return httpx.Response(200, json={"connections": [connection_json(f"conn-{user}", user)]})


@contextlib.asynccontextmanager
async def watched(path: Path, nango: FakeNango | None = None) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(nango or FakeNango()))
    app = create_app(load_config(path), http_client=http, config_path=str(path))
    async with http, serving(app) as client:
        yield client, app.state.runtime


def call_to(number: str = NUMBER, call_id: str = "call-1") -> dict[str, Any]:
    body = vapi_sample("assistant-request.pstn")
    body["message"]["phoneNumber"] = {"id": "pn-1", "number": number}
    body["message"]["call"]["phoneNumberId"] = "pn-1"
    body["message"]["call"]["id"] = call_id
    return body


async def ask(client: httpx.AsyncClient, number: str = NUMBER, call_id: str = "call-1") -> dict[str, Any]:
    response = await client.post("/vapi", content=json.dumps(call_to(number, call_id)), headers=AUTH)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def edition_of(answer: dict[str, Any]) -> str:
    """Which config built the answer; fails if any part of it came from the other one."""
    assistant = answer["assistant"]
    edition: str = assistant["firstMessage"][1]
    user_id, name = EDITIONS[edition]
    assert assistant["firstMessage"] == f"[{edition}] You reached {name}."
    assert assistant["model"]["messages"][0]["content"].startswith(f"Edition {edition}: you answer for {name}.\n")
    assert [c["authorizationId"] for c in assistant["credentials"]] == [f"conn-{user_id}"]
    assert answer["assistantOverrides"]["variableValues"]["user_name"] == name
    return edition


async def test_reload_under_load_loses_no_request_and_never_mixes_configs(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(routing_yaml("A"))
    texts = {edition: routing_yaml(edition) for edition in EDITIONS}
    calls, wave = 500, 10
    # Wave k of calls starts when swap k is done and races swap k+1; swapping goes on until every call is answered.
    swapped = [asyncio.Event() for _ in range(calls // wave)]
    async with watched(path) as (client, runtime):
        assert runtime.watcher is not None
        done = asyncio.Event()
        swaps = 0

        async def swap_until_done() -> None:
            nonlocal swaps
            while not done.is_set():
                edition = "B" if runtime.config.version == config_version(texts["A"]) else "A"
                replace_file(path, texts[edition])
                assert await runtime.watcher.reload("test") == "ok"  # type: ignore[union-attr]
                if swaps < len(swapped):
                    swapped[swaps].set()
                swaps += 1

        straddled = 0  # calls answered from one config after the other was swapped in: the race under test

        async def one_call(i: int) -> str:
            nonlocal straddled
            await swapped[i // wave].wait()
            edition = edition_of(await ask(client, call_id=f"call-{i}"))
            straddled += runtime.config.version != config_version(texts[edition])
            return edition

        swapper = asyncio.create_task(swap_until_done())
        editions = await asyncio.gather(*(one_call(i) for i in range(calls)))
        done.set()
        await swapper
    assert swaps >= calls // wave and straddled > 0
    seen = Counter(editions)
    assert seen["A"] > 50 and seen["B"] > 50, seen
    assert sample(runtime.metrics, "config_reloads", result="ok") == swaps
    assert sample(runtime.metrics, "assistant_requests", outcome="assistant", reason="ok") == calls


async def test_invalid_edit_keeps_the_old_config_and_shows_every_error_at_readyz(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(routing_yaml("A"))
    async with watched(path) as (client, runtime):
        assert runtime.watcher is not None
        replace_file(path, INVALID)
        assert await runtime.watcher.reload("test") == "invalid"

        ready = await client.get("/readyz")
        assert ready.status_code == 200  # the running config is still good
        body = ready.json()
        assert body["config"]["version"] == config_version(routing_yaml("A"))
        # Unauthenticated: where, how many and which edition of errors; the messages go to the logs.
        summary = body["config_error"]
        assert summary == {"errors": 2, "at": [f"{path}:22", f"{path}:26"], "hash": summary["hash"]}
        assert str(runtime.config_error).splitlines() == [
            f"{path}:22: users[0].timezone: unknown IANA timezone 'Mars/Olympus' (e.g. America/New_York)",
            f"{path}:26: routes[1].user: names no user: 'nobody'",
        ]
        assert edition_of(await ask(client)) == "A"
        assert sample(runtime.metrics, "config_reloads", result="invalid") == 1
        assert runtime.metrics.registry.get_sample_value("vapi_proxy_config_file_invalid") == 1

        # Putting the running content back is "unchanged", and clears the error.
        replace_file(path, routing_yaml("A"))
        assert await runtime.watcher.reload("test") == "unchanged"
        assert (await client.get("/readyz")).json()["config_error"] is None
        assert runtime.metrics.registry.get_sample_value("vapi_proxy_config_file_invalid") == 0

        replace_file(path, INVALID)
        await runtime.watcher.reload("test")
        replace_file(path, routing_yaml("B"))
        assert await runtime.watcher.reload("test") == "ok"
        assert (await client.get("/readyz")).json()["config_error"] is None
        assert edition_of(await ask(client)) == "B"


async def test_check_reports_exactly_what_a_reload_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(routing_yaml("A"))
    async with watched(path) as (_, runtime):
        replace_file(path, INVALID)
        await runtime.watcher.reload("test")  # type: ignore[union-attr]
    assert main(["check", "--config", str(path)]) == 1
    printed = [line.removeprefix("error: ") for line in capsys.readouterr().err.splitlines() if line[:7] == "error: "]
    assert runtime.config_error is not None
    assert printed == str(runtime.config_error).splitlines()
    assert len(printed) == 2


async def test_cache_entries_of_users_that_remain_survive_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(routing_yaml("A"))
    nango = FakeNango()
    async with watched(path, nango) as (client, runtime):
        assert runtime.watcher is not None
        await ask(client, "+16505550144")  # dave
        await ask(client)  # alice
        replace_file(path, routing_yaml("B"))
        assert await runtime.watcher.reload("test") == "ok"
        await ask(client, "+16505550144")
        replace_file(path, routing_yaml("A"))
        assert await runtime.watcher.reload("test") == "ok"
        await ask(client)
    assert nango.lookups == {"dave": 1, "alice": 2}  # alice left with edition B, dave never did


async def test_file_watch_sees_a_renamed_file_and_a_kubernetes_symlink_swap(tmp_path: Path) -> None:
    fast = {"reload_poll_seconds": 0.02}
    path = kubernetes_mount(tmp_path / "conf", routing_yaml("A", server=fast))
    async with watched(path) as (client, runtime):

        async def serving_version(text: str) -> bool:
            return bool((await client.get("/readyz")).json()["config"]["version"] == config_version(text))

        kubernetes_swap(tmp_path / "conf", routing_yaml("B", server=fast))
        await eventually(lambda: serving_version(routing_yaml("B", server=fast)))
        assert edition_of(await ask(client)) == "B"

        replace_file(path, routing_yaml("A", server=fast))  # replaces the symlink with a plain file
        await eventually(lambda: serving_version(routing_yaml("A", server=fast)))
        assert edition_of(await ask(client)) == "A"

        path.write_text(routing_yaml("B", server=fast))  # in place: same inode, new size and mtime
        await eventually(lambda: serving_version(routing_yaml("B", server=fast)))

        path.unlink()
        await eventually(lambda: client_error(client))
        assert edition_of(await ask(client)) == "B"
    assert sample(runtime.metrics, "config_reloads", result="ok") == 3


async def client_error(client: httpx.AsyncClient) -> bool:
    error = (await client.get("/readyz")).json()["config_error"]
    return error is not None and error["errors"] == 1


async def test_sighup_reloads_in_process_and_the_handler_is_restored(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(routing_yaml("A"))  # reload_poll_seconds: 0, so only the signal can reload
    before = signal.getsignal(signal.SIGHUP)
    async with watched(path) as (client, runtime):
        await eventually(lambda: signal.getsignal(signal.SIGHUP) is not before)
        path.write_text(routing_yaml("B"))
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: runtime.config.version == config_version(routing_yaml("B")))
        assert edition_of(await ask(client)) == "B"
    assert signal.getsignal(signal.SIGHUP) is before


async def test_reload_keeps_restart_only_settings_at_their_running_values(tmp_path: Path) -> None:
    old = load_config(_write(tmp_path / "a.yaml", routing_yaml("A")))
    b = _write(tmp_path / "b.yaml", routing_yaml("B", server={"path": "/v2", "deadline_seconds": 3}))
    new = load_config(b, running=old)
    assert new.restart_needed == ("server.path",)
    assert (new.server.path, new.server.deadline_seconds) == ("/vapi", 3.0)
    moved = routing_yaml("A").replace("index_refresh_seconds: 0", "index_refresh_seconds: 60")
    new = load_config(_write(tmp_path / "c.yaml", moved), running=old)
    assert new.restart_needed == ("nango.index_refresh_seconds",)
    assert new.nango.index_refresh_interval == 0


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


async def test_a_change_between_first_load_and_watch_start_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(routing_yaml("A"))
    config = load_config(path)
    path.write_text(routing_yaml("B"))
    metrics = Metrics()
    http = httpx.AsyncClient(transport=httpx.MockTransport(FakeNango()))
    async with http, serving(create_app(config, metrics=metrics, http_client=http, config_path=str(path))) as client:
        await eventually(lambda: sample(metrics, "config_reloads", result="ok") == 1)
        assert edition_of(await ask(client)) == "B"


def test_fingerprint_follows_symlinks_and_sees_the_name_itself(tmp_path: Path) -> None:
    path = kubernetes_mount(tmp_path, "a: 1\n")
    first = fingerprint(str(path))
    kubernetes_swap(tmp_path, "a: 1\n")  # identical content and size, new inode
    assert fingerprint(str(path)) != first
    assert fingerprint(str(tmp_path / "missing.yaml")) is None


async def test_a_reload_that_would_drop_all_authentication_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(routing_yaml("A"))
    async with watched(path) as (client, runtime):
        replace_file(path, routing_yaml("B").replace('["${VAPI_SERVER_SECRET}"]', '["${UNSET_SECRET:-}"]'))
        assert await runtime.watcher.reload("test") == "invalid"  # type: ignore[union-attr]
        assert str(runtime.config_error) == f"{path}: auth: no Vapi authentication configured (vapi_secrets, " + (
            "bearer or hmac); refusing to serve it"
        )
        assert edition_of(await ask(client)) == "A"


async def test_a_reload_parses_with_short_thread_switches_and_restores_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the parsing thread runs, the event loop waits at most LOADING_SWITCH_SECONDS for the GIL after
    its sockets, not the interpreter's 5 ms (the convoy that cut warm throughput during a large reload)."""
    import sys

    import proxy.reload

    seen: list[float] = []
    parse = proxy.reload.parse_config

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(sys.getswitchinterval())
        return parse(*args, **kwargs)

    monkeypatch.setattr(proxy.reload, "parse_config", recording)
    path = tmp_path / "routing.yaml"
    path.write_text(routing_yaml("A"))
    before = sys.getswitchinterval()
    async with watched(path) as (client, runtime):
        assert runtime.watcher is not None
        replace_file(path, routing_yaml("B"))
        assert await runtime.watcher.reload("test") == "ok"
        assert edition_of(await ask(client)) == "B"
    assert seen == [proxy.reload.LOADING_SWITCH_SECONDS]
    assert sys.getswitchinterval() == before

from __future__ import annotations

import itertools

import httpx
import pytest

from proxy.metrics import Metrics
from proxy.nango.client import Connection
from proxy.nango.directory import ConnectionDirectory
from proxy.nango.index import ConnectionIndex
from proxy.nango.tags import TagRoute, TagRouting, read_tag_route
from tests.nango_fakes import SECRET_KEY, FakeClock, FakeNango, error_body, make_client

ROUTING = TagRouting(number_tag="vapi_number", phone_number_id_tag="vapi_phone_number_id")


def conn(
    cid: str, user: str, number: str | None, *, created: str = "2026-10-01T00:00:00Z", healthy: bool = True
) -> Connection:
    route = TagRoute(number, None) if number is not None else None
    return Connection(cid, user, created, healthy, route)


def test_a_line_stays_with_its_first_healthy_claimant_whatever_the_order() -> None:
    claims = [
        conn("c-broken", "u0", "+14155550100", created="2026-09-30T00:00:00Z", healthy=False),
        conn("c-old", "u1", "+14155550100", created="2026-10-01T00:00:00Z"),
        conn("c-new", "u2", "+14155550100", created="2026-10-02T00:00:00Z"),
        conn("c-unreadable", "u3", "+14155550100", created="yesterday"),  # not "oldest" by being unreadable
    ]
    for order in itertools.permutations(claims):
        index = ConnectionIndex()
        for claim in order:
            index.add(claim)
        assert index.line("to", "+14155550100") == claims[1]
        (conflict,) = index.conflicts()
        assert {c.connection_id for c in conflict.losers} == {"c-broken", "c-new", "c-unreadable"}


def test_a_users_reconnection_is_not_a_competing_claim() -> None:
    claims = [
        conn("c-u1-first", "u1", "+14155550100", created="2026-10-01T00:00:00Z"),
        conn("c-u2", "u2", "+14155550100", created="2026-10-02T00:00:00Z"),
        conn("c-u1-again", "u1", "+14155550100", created="2026-10-03T00:00:00Z"),
    ]
    for order in itertools.permutations(claims):
        index = ConnectionIndex()
        for claim in order:
            index.add(claim)
        # u1 claimed first; of u1's connections, the newest serves (as for its user entry).
        assert index.line("to", "+14155550100") == claims[2] == index.user("u1")
        (conflict,) = index.conflicts()
        assert [c.connection_id for c in conflict.losers] == ["c-u2"]
    index.remove("c-u1-first", "u1")  # u1's first claim is deleted: u2 claimed before u1's remaining one
    assert index.line("to", "+14155550100") == claims[1]


def test_moving_and_removing_a_claim_promotes_the_next_one() -> None:
    index = ConnectionIndex()
    index.add(conn("c-old", "u1", "+14155550100", created="2026-10-01T00:00:00Z"))
    index.add(conn("c-new", "u2", "+14155550100", created="2026-10-02T00:00:00Z"))
    # c-new's tags move it to another number (a confirmed, fresh record of c-new)
    index.put(conn("c-new", "u2", "+14155550199", created="2026-10-02T00:00:00Z"))
    assert index.line("to", "+14155550100").connection_id == "c-old"  # type: ignore[union-attr]
    assert index.line("to", "+14155550199").connection_id == "c-new"  # type: ignore[union-attr]
    assert list(index.conflicts()) == []
    index.remove("c-old", "u1")
    assert index.line("to", "+14155550100") is None
    assert index.user("u1") is None and index.user("u2") is not None
    assert index.claimed_lines == 1


def test_put_never_rolls_a_user_back_to_an_older_connection() -> None:
    index = ConnectionIndex()
    index.add(conn("c-new", "u1", None, created="2026-10-02T00:00:00Z"))
    assert index.put(conn("c-old", "u1", None, created="2026-10-01T00:00:00Z")) is False
    assert index.user("u1").connection_id == "c-new"  # type: ignore[union-attr]
    # A fresh record of the current connection replaces it, errors included (the index holds one per user:
    # the older one comes back with the next lookup or refresh).
    index.put(conn("c-new", "u1", None, created="2026-10-02T00:00:00Z", healthy=False))
    assert index.user("u1") == conn("c-new", "u1", None, created="2026-10-02T00:00:00Z", healthy=False)


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"vapi_number": "(415) 555-0100"}, TagRoute("+14155550100", None)),
        ({"vapi_phone_number_id": " id-1 "}, TagRoute(None, "id-1")),
        ({"vapi_number": "not a number"}, None),
        ({"vapi_number": "+1415555\n0100"}, None),
        ({"vapi_number": "+" + "1" * 300}, None),
        ({"VAPI_NUMBER": "+14155550100"}, None),  # Nango lowercases keys: an upper-case key never arrives
        ([], None),
    ],
)
def test_read_tag_route(tags: object, expected: TagRoute | None) -> None:
    assert read_tag_route(tags, ROUTING) == expected


# --- the fake Nango follows Nango's facts, so tests against it mean something ---


@pytest.mark.anyio
async def test_the_fake_follows_nangos_tag_rules() -> None:
    fake = FakeNango()
    fake.add("c1", {"End_User_Id": "u1", "vapi_number": "+14155550100"})
    async with fake.client() as http:
        url = "https://nango.test/connections"
        auth = {"Authorization": f"Bearer {SECRET_KEY}"}
        found = (await http.get(url, params={"tags[vapi_number]": "+14155550100"}, headers=auth)).json()
        raw_plus = (await http.get(url + "?tags%5Bvapi_number%5D=+14155550100", headers=auth)).json()
        unknown = await http.get(url, params={"cursor": "x"}, headers=auth)
        patched = await http.patch(url + "/c1", params={"provider_config_key": "google-calendar"},
                                   json={"tags": {"Crm_Id": "7"}}, headers=auth)  # fmt: skip
        too_many = await http.patch(url + "/c1", params={"provider_config_key": "google-calendar"},
                                    json={"tags": {f"k{i}": "v" for i in range(11)}}, headers=auth)  # fmt: skip
    assert [c["connection_id"] for c in found["connections"]] == ["c1"]
    assert raw_plus["connections"] == []  # a raw + is a space to qs
    assert unknown.status_code == 400
    assert patched.json() == {"success": True}
    assert fake.find("c1")["tags"] == {"crm_id": "7"}  # type: ignore[index]  # replaced, lowercased
    assert too_many.status_code == 400


@pytest.mark.anyio
async def test_an_index_pass_survives_a_failing_page_and_keeps_the_pages_it_has() -> None:
    fake = FakeNango()
    for i in range(25):
        fake.add(f"c{i}", {"end_user_id": f"u{i}", "vapi_number": f"+1415555{i:04d}"})
    fake.page_failures[1] = [
        httpx.Response(429, headers={"Retry-After": "0"}, json=error_body("rate_limit_exceeded")),
        httpx.Response(503, json=error_body("server_error")),
    ]
    metrics, clock = Metrics(), FakeClock()
    async with fake.client() as http:
        client = make_client(http, metrics, clock, index_page_size=10, tag_routing=ROUTING)
        directory = ConnectionDirectory(client, client.settings, metrics, clock=clock)
        assert await directory.refresh_index() is True
    status = directory.status()
    assert (status["index_size"], status["tagged_lines"]) == (25, 25)
    pages = [r.url.params["page"] for r in fake.requests]
    assert pages == ["0", "1", "1", "1", "2"]  # page 1 asked again; pages 0 and 2 once each
    assert clock.sleeps == [2.0]  # Retry-After 0 waits nothing; the 503 then backs off (1 s, then 2 s)

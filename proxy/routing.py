"""Inbound call -> route, in O(1): a handful of dict lookups in a fixed order of precedence.

Precedence, most specific first (documented in the README):

1. `from` scoped to a line: the caller's number together with the called number or phoneNumberId
2. `from` alone: the caller's number, whatever line they called (a VIP list)
3. `phone_number_id`: Vapi's id of the called line (stable even if the number text changes)
4. `to`: the called number, E.164 after normalisation (or a SIP URI)
5. `default`
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from proxy.numbers import normalize_number
from proxy.yamlsource import Path, format_path

if TYPE_CHECKING:
    from proxy.config import Route

KeyKind = Literal["to", "phone_number_id", "from"]
Rule = Literal["from+to", "from+phone_number_id", "from", "phone_number_id", "to", "default"]


def route_key(raw: object) -> str | None:
    """The lookup key of a number as an admin or Vapi writes it: E.164, else a bare lower-case SIP URI."""
    number = normalize_number(raw)
    if number is not None:
        return number
    if isinstance(raw, str) and raw[:4].lower() in ("sip:", "sips") and len(raw) <= 256:
        uri = raw.strip().lower().split(";", 1)[0]
        return "sip:" + uri.split(":", 1)[1] if ":" in uri else None
    return None


@dataclass(frozen=True, slots=True)
class KeyEntry:
    kind: KeyKind
    value: str
    path: Path


@dataclass(frozen=True, slots=True)
class RouteKeys:
    entries: tuple[KeyEntry, ...] = ()
    is_default: bool = False
    default_path: Path = ()

    def of(self, kind: KeyKind) -> list[KeyEntry]:
        return [entry for entry in self.entries if entry.kind == kind]


@dataclass(frozen=True)
class InboundCall:
    """What routing needs from a Vapi message, already normalised."""

    call_id: str
    to: str | None = None
    phone_number_id: str | None = None
    caller: str | None = None


@dataclass(frozen=True)
class Match:
    route: Route
    rule: Rule


@dataclass(frozen=True)
class Conflict:
    path: Path
    message: str


@dataclass(frozen=True)
class RoutingTable:
    by_caller_on_line: dict[tuple[str, str], Route]
    by_caller: dict[str, Route]
    by_phone_number_id: dict[str, Route]
    by_to: dict[str, Route]
    default: Route | None

    def match(self, call: InboundCall) -> Match | None:
        found = self.find(call.to, call.phone_number_id, call.caller)
        return Match(*found) if found is not None else None

    def find(self, to: str | None, phone_number_id: str | None, caller: str | None) -> tuple[Route, Rule] | None:
        """`match` on plain keys, without building objects (the warm path in proxy.fastpath)."""
        if caller is not None:
            if to is not None and (route := self.by_caller_on_line.get((caller, to))) is not None:
                return route, "from+to"
            if phone_number_id is not None:
                route = self.by_caller_on_line.get((caller, phone_number_id))
                if route is not None:
                    return route, "from+phone_number_id"
            if (route := self.by_caller.get(caller)) is not None:
                return route, "from"
        if phone_number_id is not None and (route := self.by_phone_number_id.get(phone_number_id)):
            return route, "phone_number_id"
        if to is not None and (route := self.by_to.get(to)) is not None:
            return route, "to"
        if self.default is not None:
            return self.default, "default"
        return None


def build_routing_table(routes: Iterable[Route]) -> tuple[RoutingTable, list[Conflict]]:
    """Index routes by every key they answer to; two routes claiming the same key is a conflict."""
    by_caller_on_line: dict[tuple[str, str], Route] = {}
    by_caller: dict[str, Route] = {}
    by_phone_number_id: dict[str, Route] = {}
    by_to: dict[str, Route] = {}
    default: Route | None = None
    owners: dict[tuple[str, object], tuple[Route, Path]] = {}
    conflicts: list[Conflict] = []

    def claimed(label: str, key: object, route: Route, path: Path) -> bool:
        owner = owners.setdefault((label, key), (route, path))
        if owner[0] is not route:
            shown = "/".join(key) if isinstance(key, tuple) else key
            conflicts.append(Conflict(path, f"{label} {shown} is already routed by {format_path(owner[1])}"))
            return False
        return True

    for route in routes:
        keys = route.keys
        callers = keys.of("from")
        lines = keys.of("to") + keys.of("phone_number_id")
        if callers and lines:
            for caller in callers:
                for line in lines:
                    pair = (caller.value, line.value)
                    if claimed("from+line", pair, route, caller.path):
                        by_caller_on_line[pair] = route
            continue
        for entry in keys.entries:
            index = {"from": by_caller, "phone_number_id": by_phone_number_id, "to": by_to}[entry.kind]
            if claimed(entry.kind, entry.value, route, entry.path):
                index[entry.value] = route
        if keys.is_default:
            if default is not None:
                conflicts.append(Conflict(keys.default_path, f"a second default route ({default.name} is one)"))
            else:
                default = route
    return RoutingTable(by_caller_on_line, by_caller, by_phone_number_id, by_to, default), conflicts

"""The index store: every connection of the integration by user, and by the Vapi line its tags claim.

Pure data, no I/O: the bulk pass `add`s every listed connection, a confirmed webhook or lookup `put`s
the fresh record of one connection, a confirmed deletion `remove`s it. The same rule decides at every
step, so the answer never depends on the order in which a replica learnt things:

- a user's connection: healthy before unhealthy, then the newest `created`, then the connection id;
- a line (number or Vapi phone-number id) claimed by several users' connections: the first healthy claimant
  keeps it (`line_owner`), so a new connection tagged with a number in use never takes the line; moving a
  line is an admin's act (`vapi-calendar-proxy assign`). The other claims stay listed as conflicts
  (`conflicts()`), so they show in `connections`, a metric and the log.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from proxy.nango.client import Connection, created_at, rank_connection

__all__ = ["ClaimKind", "Conflict", "ConnectionIndex", "claimant", "line_owner"]

ClaimKind = str  # "to" (E.164 number) or "phone_number_id"


@dataclass(frozen=True)
class Conflict:
    """Several users' connections claim one line: `winner` routes it, `losers` are ignored until fixed."""

    kind: ClaimKind
    value: str
    winner: Connection
    losers: tuple[Connection, ...]


def _better(a: Connection, b: Connection) -> Connection:
    return a if rank_connection(a) >= rank_connection(b) else b


def claimant(conn: Connection) -> str:
    """Who a line claim is made for: the connection's user (a user's several connections are one claimant)."""
    return conn.user_id if conn.user_id is not None else "\0" + conn.connection_id


def line_owner(claims: Sequence[Connection]) -> Connection:
    """Who keeps a line several connections claim: the first healthy claimant. Among the healthy claims (all,
    when none is), the claimant whose oldest claiming connection is the oldest (`created`, an unreadable one
    counting as newest; then the connection id); of that claimant's connections, the one its user entry
    would pick (healthy, newest). The same answer in whatever order the claims were learnt."""
    pool = [conn for conn in claims if conn.healthy] or list(claims)
    first: dict[str, tuple[float, str]] = {}
    for conn in pool:
        at = created_at(conn.created)
        since = (math.inf if at == -math.inf else at, conn.connection_id)
        who = claimant(conn)
        if who not in first or since < first[who]:
            first[who] = since
    owner = min(first, key=lambda who: (first[who], who))
    return max((conn for conn in pool if claimant(conn) == owner), key=rank_connection)


class ConnectionIndex:
    """User -> connection and line -> connection, with the conflicting claims kept aside."""

    def __init__(self) -> None:
        self._users: dict[str, Connection] = {}
        # Only connections whose tags claim a line are kept by id: to undo their claims when they change.
        self._tagged: dict[str, Connection] = {}
        self._claims: dict[ClaimKind, dict[str, Connection]] = {"to": {}, "phone_number_id": {}}
        self._contested: dict[tuple[ClaimKind, str], list[Connection]] = {}
        self._kinds: dict[str, int] | None = None  # `kinds`, until the index changes

    def __len__(self) -> int:
        return len(self._users)

    @property
    def claimed_lines(self) -> int:
        return sum(len(claims) for claims in self._claims.values())

    def user(self, user_id: str) -> Connection | None:
        return self._users.get(user_id)

    def line(self, kind: ClaimKind, value: str) -> Connection | None:
        return self._claims[kind].get(value)

    def lines(self, kind: ClaimKind) -> list[str]:
        """Every claimed line of one kind."""
        return list(self._claims[kind])

    def connection(self, connection_id: str) -> Connection | None:
        """A tagged connection by id (untagged ones are only reachable through their user)."""
        return self._tagged.get(connection_id)

    def add(self, conn: Connection) -> None:
        """One connection from the bulk listing."""
        self._kinds = None
        if conn.user_id is not None:
            current = self._users.get(conn.user_id)
            self._users[conn.user_id] = conn if current is None else _better(current, conn)
        if conn.route is not None:
            self._tagged[conn.connection_id] = conn
            for kind, value in conn.route.claims():
                self._claim(kind, value, conn)

    def put(self, conn: Connection) -> bool:
        """Nango's current record of one connection (confirmed webhook or lookup). True when it is now
        its user's connection; a newer healthy connection of the same user stays (no rollback)."""
        self.remove(conn.connection_id, conn.user_id)
        self.add(conn)
        return conn.user_id is not None and self._users.get(conn.user_id) is conn

    def remove(self, connection_id: str, user_id: str | None = None) -> None:
        """Forget a connection: Nango says it is gone, or a fresh record of it follows (`put`). `user_id`:
        whose entry it may be, besides the user its tags claimed lines for."""
        self._kinds = None
        old = self._tagged.pop(connection_id, None)
        owners = {user_id}
        if old is not None:
            owners.add(old.user_id)
            if old.route is not None:
                for kind, value in old.route.claims():
                    self._unclaim(kind, value, connection_id)
        for owner in owners:
            current = self._users.get(owner) if owner is not None else None
            if current is not None and current.connection_id == connection_id:
                del self._users[current.user_id]  # type: ignore[arg-type]

    def forget(self, connection_id: str, user_id: str | None = None) -> None:
        """Nango says the connection is gone (`user_id` None), or is not `user_id`'s. In the second case only
        what ties it to `user_id` goes: a connection held as another user's stays theirs, lines included (a
        webhook naming the wrong user says nothing about the connection's real owner)."""
        held = self._tagged.get(connection_id)
        if user_id is not None and held is not None and held.user_id != user_id:
            current = self._users.get(user_id)
            if current is not None and current.connection_id == connection_id:
                del self._users[user_id]
            return
        self.remove(connection_id, user_id)

    def kinds(self, kind_of: Callable[[str, str], str]) -> dict[str, int]:
        """Connections per calendar API (`kind_of(integration, provider)`), counted again only after a change:
        /readyz asks on every poll, the index changes with a refresh or a webhook."""
        if self._kinds is None:
            self._kinds = dict(Counter(kind_of(conn.integration, conn.provider) for conn in self.connections()))
        return self._kinds

    def connections(self) -> Iterator[Connection]:
        """Every connection held, once each: `add`ing them to an empty index rebuilds this one (the shared
        index in Redis stores them so)."""
        seen: set[str] = set()
        for conns in (self._users.values(), self._tagged.values(), *self._contested.values()):
            for conn in conns:
                if conn.connection_id not in seen:
                    seen.add(conn.connection_id)
                    yield conn

    def conflicts(self) -> Iterator[Conflict]:
        for kind, value in self._contested:
            if (conflict := self.conflict(kind, value)) is not None:
                yield conflict

    def conflict(self, kind: ClaimKind, value: str) -> Conflict | None:
        """The other users' claims on a line, beside the one that routes it; None when there are none."""
        winner = self._claims[kind].get(value)
        if winner is None:
            return None
        owner = claimant(winner)
        losers = tuple(conn for conn in self._contested.get((kind, value), ()) if claimant(conn) != owner)
        return Conflict(kind, value, winner, losers) if losers else None

    def _claim(self, kind: ClaimKind, value: str, conn: Connection) -> None:
        current = self._claims[kind].get(value)
        if current is None:
            self._claims[kind][value] = conn  # the usual case, and the bulk pass's: no one else claims it
            return
        others = (current, *self._contested.get((kind, value), ()))
        self._settle(kind, value, [c for c in others if c.connection_id != conn.connection_id] + [conn])

    def _unclaim(self, kind: ClaimKind, value: str, connection_id: str) -> None:
        current = self._claims[kind].get(value)
        claims = (*((current,) if current is not None else ()), *self._contested.get((kind, value), ()))
        self._settle(kind, value, [c for c in claims if c.connection_id != connection_id])

    def _settle(self, kind: ClaimKind, value: str, claims: list[Connection]) -> None:
        key = (kind, value)
        if not claims:
            self._claims[kind].pop(value, None)
            self._contested.pop(key, None)
            return
        winner = claims[0] if len(claims) == 1 else line_owner(claims)
        self._claims[kind][value] = winner
        losers = [c for c in claims if c is not winner]
        if losers:
            self._contested[key] = losers
        else:
            self._contested.pop(key, None)

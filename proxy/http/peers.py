"""Who a peer is, for per-address bounds: its address, an IPv6 peer by its /64, a trusted proxy not at all.

One host on IPv6 usually holds a whole /64 (and can pick any address in it at will), so a bound per
address would be no bound there: IPv6 peers are counted by their /64, IPv4 peers (and IPv4-mapped IPv6
ones) by their address. A peer listed in `server.forwarded_allow_ips` is a load balancer or ingress
carrying many callers' connections; it is not bounded as one caller (the proxy in front bounds its own
clients), and behind it the app sees each caller's address from `X-Forwarded-For`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["PeerBound", "PeerKeys", "PerPeer"]

IPV6_PREFIX = 64


class PeerKeys:
    """The key a peer is counted under, or None for a trusted proxy (or a peer without an IP address)."""

    __slots__ = ("_any", "_networks")

    def __init__(self, trusted: Iterable[str] = ()) -> None:
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._any = False
        for entry in trusted:
            if entry.strip() == "*":
                self._any = True
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                continue  # a name, or a Unix socket path: no peer address matches it
        self._networks = tuple(networks)

    def key(self, host: str | None) -> str | None:
        if host is None or self._any:
            return None
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])  # without an IPv6 zone
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self._networks):
            return None
        if isinstance(address, ipaddress.IPv6Address):
            return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
        return str(address)


class PerPeer:
    """How many of something each peer holds now, for a bound per peer."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[str, int] = {}

    def held(self, key: str | None) -> int:
        return 0 if key is None else self._held.get(key, 0)

    def take(self, key: str | None) -> None:
        if key is not None:
            self._held[key] = self._held.get(key, 0) + 1

    def give_back(self, key: str | None) -> None:
        if key is None:
            return
        left = self._held.get(key, 0) - 1
        if left > 0:
            self._held[key] = left
        else:
            self._held.pop(key, None)

    def __len__(self) -> int:
        return len(self._held)


class PeerBound:
    """Work in progress bounded in all (`limit`) and for one peer (an eighth of the limit, at least one): a
    few addresses cannot take it all, so they cannot starve everyone else's requests of the same kind."""

    __slots__ = ("_keys", "_peers", "total")

    SHARE = 8

    def __init__(self) -> None:
        self._keys = PeerKeys()
        self._peers = PerPeer()
        self.total = 0

    def enter(self, host: str | None, limit: int) -> bool:
        """Whether `host` may start one more now; if so, `leave(host)` must follow."""
        key = self._keys.key(host)
        if self.total >= limit or self._peers.held(key) >= max(1, limit // self.SHARE):
            return False
        self.total += 1
        self._peers.take(key)
        return True

    def leave(self, host: str | None) -> None:
        self.total -= 1
        self._peers.give_back(self._keys.key(host))

"""Peers for per-address bounds: IPv4 by address, IPv6 by /64, trusted proxies exempt; bounds in all and per peer."""

from __future__ import annotations

from proxy.http.peers import PeerBound, PeerKeys


def test_ipv6_peers_count_by_their_64_and_mapped_ipv4_as_ipv4() -> None:
    keys = PeerKeys()
    assert keys.key("203.0.113.9") == "203.0.113.9"
    assert keys.key("::ffff:203.0.113.9") == "203.0.113.9"
    assert keys.key("2001:db8:1:2::5") == keys.key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert keys.key("2001:db8:1:3::5") != keys.key("2001:db8:1:2::5")
    assert keys.key("fe80::1%eth0") == "fe80::/64"
    assert keys.key(None) is None and keys.key("-") is None and keys.key("/run/proxy.sock") is None


def test_trusted_proxies_are_not_bounded_as_one_peer() -> None:
    keys = PeerKeys(["10.0.0.0/8", "192.0.2.1", "not an address"])
    assert keys.key("10.1.2.3") is None and keys.key("192.0.2.1") is None
    assert keys.key("192.0.2.2") == "192.0.2.2"
    assert PeerKeys(["*"]).key("198.51.100.1") is None


def test_a_peer_holds_at_most_an_eighth_of_the_bound_and_at_least_one() -> None:
    bound = PeerBound()
    assert [bound.enter("198.51.100.1", 32) for _ in range(5)] == [True] * 4 + [False]
    assert all(bound.enter(f"198.51.100.{n}", 32) for n in range(2, 9) for _ in range(4))
    assert bound.total == 32
    assert not bound.enter("198.51.100.99", 32)  # the bound in all
    bound.leave("198.51.100.1")
    assert bound.enter("198.51.100.1", 32) and not bound.enter("198.51.100.1", 32)
    small = PeerBound()
    assert small.enter("198.51.100.1", 4) and not small.enter("198.51.100.1", 4) and small.enter(None, 4)

"""Inbound call -> route, in O(1): the routing table is built with each config snapshot.

The table and its precedence rules live with the snapshot (`proxy.config.snapshot.RoutingTable`); this
module is what the request path imports.
"""

from __future__ import annotations

from proxy.config.snapshot import InboundCall, KeyEntry, Match, RouteKeys, RoutingTable, Rule
from proxy.numbers import route_key

__all__ = ["InboundCall", "KeyEntry", "Match", "RouteKeys", "RoutingTable", "Rule", "route_key"]

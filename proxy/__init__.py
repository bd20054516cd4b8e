"""vapi-calendar-proxy: a Vapi server URL that gives each inbound call its user's calendar assistant."""

from __future__ import annotations

__version__ = "0.1.0"

"""Round trips per calendar tool, Google Calendar and Microsoft Graph side by side, at a fixed latency per request.

Each tool runs in-process (proxy.vapi.tools.answer_tool_calls) against the test fakes of both services behind
Nango's proxy (tests/google_fakes.py, tests/graph_fakes.py; they need the test extra: pip install -e '.[test]'),
every request answering after `--latency-ms`. Reported per tool and provider: requests made, requests in
sequence (end-to-end time over the latency, rounded) and end-to-end milliseconds; Google is the baseline of the
same run, so the last column is Graph's time over Google's.

    python bench/round_trips.py --latency-ms 150
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import respx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.calendar.provider import CalendarProvider
from proxy.metrics import Metrics
from proxy.vapi.tools import answer_tool_calls
from tests.google_fakes import FakeGoogle, make_calendar
from tests.graph_fakes import FakeGraph, make_outlook
from tests.vapi.test_tools import ctx, message

NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 3, 2, 8, 0, tzinfo=NY)
SLOT = {"start": "2026-03-03T14:00:00-05:00", "name": "Sam Caller"}
# In order: each step works on what the ones before it left in the calendar.
STEPS: list[tuple[str, dict[str, Any]]] = [
    ("check_availability", {"start": "2026-03-03T09:00:00-05:00", "end": "2026-03-03T17:00:00-05:00"}),
    ("find_open_slots", {}),
    ("book_appointment", SLOT),
    ("reschedule_appointment", {"new_start": "2026-03-03T15:00:00-05:00"}),
    ("cancel_appointment", {}),
]


async def run(provider: str, latency: float) -> dict[str, tuple[int, float, str]]:
    """tool -> (requests, seconds, the answer's first words)."""
    results: dict[str, tuple[int, float, str]] = {}
    async with respx.mock(assert_all_called=False) as mock, httpx.AsyncClient() as http:
        fake: FakeGoogle | FakeGraph
        make: Callable[[httpx.AsyncClient], CalendarProvider]
        if provider == "google":
            fake, make = FakeGoogle(mock, latency=latency), make_calendar
        else:
            fake, make = FakeGraph(mock, latency=latency), make_outlook
        for tool, args in STEPS:
            before = len(mock.calls)
            started = time.perf_counter()
            answer = await answer_tool_calls(message((tool, args)), ctx(), make(http), Metrics(), now=NOW, timeout=10.0)
            elapsed = time.perf_counter() - started
            [result] = answer["results"]  # type: ignore[index]
            text = str(result.get("result") or result.get("error"))
            results[tool] = (len(mock.calls) - before, elapsed, " ".join(text.split()[:4]))
        del fake
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=float, default=150.0)
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    # A first pass unmeasured: the fakes' one-time work (msgraph-sdk builds its models on first use) and
    # imports must not count as round trips.
    asyncio.run(run("google", 0.0))
    asyncio.run(run("microsoft", 0.0))
    google = asyncio.run(run("google", latency))
    graph = asyncio.run(run("microsoft", latency))
    print(f"latency {args.latency_ms:g} ms per request through Nango's proxy")
    print(f"{'tool':24} {'provider':10} {'requests':>8} {'in sequence':>11} {'ms':>7} {'vs Google':>9}  answer")
    for tool, _ in STEPS:
        for name, table in (("google", google), ("microsoft", graph)):
            count, seconds, words = table[tool]
            ratio = seconds / google[tool][1]
            print(
                f"{tool:24} {name:10} {count:8d} {round(seconds / latency):11d} {seconds * 1000:7.0f} "
                f"{ratio:9.2f}  {words}"
            )


if __name__ == "__main__":
    main()

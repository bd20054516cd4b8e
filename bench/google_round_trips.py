"""Calendar round trips per tool: how many Google requests each tool waits for one after another, and how long
its answer takes when every request takes --latency-ms (Google behind Nango's proxy: about 150 ms).

    python bench/google_round_trips.py                    # 150 ms per request, 3 runs per tool
    python bench/google_round_trips.py --latency-ms 400 --repeat 5

Each tool call runs in this process against tests/google_fakes.py's FakeGoogle (Google Calendar's semantics,
requests validated as Google does), which sleeps the latency on every request and logs when each was sent
and answered. "in_sequence" is the longest chain of requests each sent after the previous one was answered;
"requests" counts all of them. The baseline, measured in the same run, is one bare freeBusy request through
the same client and fake: each tool's "ratio" is its answer time over that request's.
Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import respx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.calendar.context import CalendarContext
from proxy.config.calendar import CalendarSettings
from proxy.metrics import Metrics
from proxy.vapi.tools import answer_tool_calls
from tests.google_fakes import FakeGoogle, google_event, make_calendar

NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 3, 2, 8, 0, tzinfo=NY)
CALLER, REFERENCE = "+14155550123", "246813"
# The largest horizon the configuration allows (proxy.config.calendar.CalendarSettings.horizon_days).
LONGEST_HORIZON = 366

TOOLS: dict[str, tuple[str, dict[str, Any], int]] = {
    "check_availability (one day)": (
        "check_availability",
        {"start": "2026-03-03T09:00:00-05:00", "end": "2026-03-03T17:00:00-05:00"},
        14,
    ),
    "find_open_slots (default range)": ("find_open_slots", {}, 14),
    "book_appointment": ("book_appointment", {"start": "2026-03-03T14:00:00-05:00", "name": "Sam"}, 14),
    "reschedule_appointment": (
        "reschedule_appointment",
        {"new_start": "2026-03-05T11:00:00-05:00", "reference": REFERENCE},
        14,
    ),
    "cancel_appointment": ("cancel_appointment", {"reference": REFERENCE}, 14),
    f"find_open_slots ({LONGEST_HORIZON} days, all busy)": ("find_open_slots", {}, LONGEST_HORIZON),
}


def message(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    call = {"id": "tc-0", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
    return {"type": "tool-calls", "toolCallList": [call], "call": {"id": "bench-call", "customer": {"number": CALLER}}}


def context(horizon_days: int) -> CalendarContext:
    settings = CalendarSettings(mode="proxy", horizon_days=horizon_days)
    return CalendarContext("doe", "Dr. Doe", NY, "conn-doe", settings, "bench-call", CALLER)


def seed(google: FakeGoogle, horizon_days: int) -> None:
    private = {"vapiCallId": "earlier-call", "vapiCallerNumber": CALLER, "vapiBookingRef": REFERENCE}
    google.add(google_event("mine00001", "2026-03-04T10:00:00-05:00", "2026-03-04T10:30:00-05:00", private=private))
    if horizon_days == LONGEST_HORIZON:
        end = NOW + timedelta(days=horizon_days + 2)
        google.other_busy = [(NOW.isoformat(), end.isoformat())]


async def one_tool(name: str, arguments: dict[str, Any], horizon_days: int, latency: float) -> dict[str, Any]:
    async with respx.mock(assert_all_called=False) as mock, httpx.AsyncClient() as http:
        google = FakeGoogle(mock, latency=latency)
        seed(google, horizon_days)
        started = time.perf_counter()
        answer = await answer_tool_calls(
            message(name, arguments), context(horizon_days), make_calendar(http), Metrics(), now=NOW
        )
        elapsed = time.perf_counter() - started
    [result] = answer["results"]  # type: ignore[misc]
    if "result" not in result:
        raise SystemExit(f"{name} failed: {result}")
    return {"seconds": elapsed, "requests": len(google.log), "in_sequence": google.in_sequence()}


async def one_request(latency: float) -> float:
    async with respx.mock(assert_all_called=False) as mock, httpx.AsyncClient() as http:
        FakeGoogle(mock, latency=latency)
        started = time.perf_counter()
        await make_calendar(http).free_busy("conn-doe", "primary", start=NOW, end=NOW + timedelta(days=1))
        return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=float, default=150.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    baseline: list[float] = []
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in TOOLS}
    for _ in range(args.repeat):  # interleaved, so machine noise hits the baseline and the tools alike
        baseline.append(await one_request(latency))
        for label, (name, arguments, horizon) in TOOLS.items():
            runs[label].append(await one_tool(name, arguments, horizon, latency))
    base = statistics.median(baseline)
    report: dict[str, Any] = {
        "google_latency_ms": args.latency_ms,
        "repeat": args.repeat,
        "baseline_one_request_ms": round(base * 1000, 1),
        "tools": {},
    }
    for label, measured in runs.items():
        seconds = statistics.median(r["seconds"] for r in measured)
        report["tools"][label] = {
            "in_sequence": max(r["in_sequence"] for r in measured),
            "requests": max(r["requests"] for r in measured),
            "end_to_end_ms": round(seconds * 1000, 1),
            "ratio": round(seconds / base, 2),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())

"""What a config reload of a large file costs the warm path: wrk against the proxy while it reloads, and without.

    python bench/reload_warm.py [--users 100000] [--duration 10] [--rounds 3] [--style block|flow]

One proxy (the protocol `serve` runs, as in bench/run.py) serves a routing file of N users with fixed
connection ids, so every call is warm and no Nango is needed. Each round runs wrk twice, in turns: once
with the file left alone (the baseline of the same run), once while the file is rewritten again and again
with one user's name edited (the usual change), each rewrite waiting for /readyz to show the new version
before the next. Prints, per round and as medians: throughput and p99 with and without reloads, their
ratios, and how many reloads completed and how long each took (file written -> new version served).
Needs `wrk` on PATH.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from generate import RoutingOptions  # noqa: E402
from run import Bench, Process  # noqa: E402

from proxy.config import config_version  # noqa: E402

EDITED = ('name: "User 7"', 'name: "User Seven"')


def served_version(proxy: Process) -> object:
    try:
        with urllib.request.urlopen(proxy.url + "/readyz", timeout=5) as response:
            return json.loads(response.read()).get("config", {}).get("version")
    except OSError:
        return None


class Reloader(threading.Thread):
    """Rewrites the routing file with one user edited, back and forth, each time until the proxy serves that
    very text (its version), so a reload still running when a round ends cannot be taken for the next one."""

    def __init__(self, proxy: Process, path: Path) -> None:
        super().__init__(daemon=True)
        self.proxy, self.path = proxy, path
        self.original = path.read_text()
        self.edited = self.original.replace(*EDITED, 1)
        assert self.edited != self.original, "the generated file no longer holds the user this edits"
        self.stopping = threading.Event()
        self.seconds: list[float] = []  # file written -> new version served, per completed reload

    def run(self) -> None:
        texts = (self.edited, self.original)
        while not self.stopping.is_set():
            text = texts[len(self.seconds) % 2]
            started = time.monotonic()
            self.path.write_text(text)
            while not self.stopping.wait(0.05):
                if served_version(self.proxy) == config_version(text):
                    self.seconds.append(time.monotonic() - started)
                    break

    def stop(self) -> None:
        """Stop editing; return once the original text is served again (the next round starts settled)."""
        self.stopping.set()
        self.join()
        self.path.write_text(self.original)
        deadline = time.monotonic() + 120
        while served_version(self.proxy) != config_version(self.original) and time.monotonic() < deadline:
            time.sleep(0.05)


def ratio(row: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    return {"rps": round(row["rps"] / base["rps"], 3), "p99": round(row["p99_ms"] / base["p99_ms"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--style", choices=("block", "flow"), default="block")
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        bench = Bench(out, not args.no_pin, args.duration, args.connections, 1, args.users, "secret")
        options = RoutingOptions(users=args.users, fixed_ids=True, index_refresh_seconds=0.0, style=args.style)
        try:
            proxy = bench.proxy("fixed", options)
            path = out / "fixed.routing.yaml"
            bench.wrk(proxy, duration=2)  # warm-up: connections, caches, allocator
            rounds = []
            for _ in range(args.rounds):
                quiet = bench.wrk(proxy)
                reloader = Reloader(proxy, path)
                reloader.start()
                loaded = bench.wrk(proxy)
                reloader.stop()
                rounds.append((quiet, loaded, reloader.seconds))
                print(
                    f"round: without reloads {quiet['rps']:,.0f} req/s p99 {quiet['p99_ms']:.2f} ms; "
                    f"reloading {loaded['rps']:,.0f} req/s p99 {loaded['p99_ms']:.2f} ms "
                    f"(max {loaded['max_ms']:.1f} ms, {loaded['non_200']:.0f} non-200); "
                    f"{len(reloader.seconds)} reloads, {statistics.median(reloader.seconds or [0]):.2f} s each",
                    flush=True,
                )
        finally:
            bench.stop_all()
    ratios = [ratio(loaded, quiet) for quiet, loaded, _ in rounds]
    reloads = [seconds for _, _, found in rounds for seconds in found]
    print(f"{args.users:,} users, {args.style} style, {args.rounds} rounds of {args.duration} s, medians:")
    print(
        f"  without reloads: {statistics.median(q['rps'] for q, _, _ in rounds):,.0f} req/s, "
        f"p99 {statistics.median(q['p99_ms'] for q, _, _ in rounds):.2f} ms"
    )
    print(
        f"  while reloading: {statistics.median(r['rps'] for _, r, _ in rounds):,.0f} req/s, "
        f"p99 {statistics.median(r['p99_ms'] for _, r, _ in rounds):.2f} ms, "
        f"max {max(r['max_ms'] for _, r, _ in rounds):.1f} ms, non-200 {sum(r['non_200'] for _, r, _ in rounds):.0f}"
    )
    print(
        f"  ratio: throughput {statistics.median(r['rps'] for r in ratios):.3f}, "
        f"p99 {statistics.median(r['p99'] for r in ratios):.2f}x  (per round: {ratios})"
    )
    print(
        f"  reloads: {len(reloads)}, each {statistics.median(reloads or [0]):.2f} s median "
        f"(file written -> new version served), {max(reloads or [0]):.2f} s max"
    )


if __name__ == "__main__":
    main()

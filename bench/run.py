"""The benchmark, one command: the proxy against the bare-framework baseline, and under Nango faults.

    python bench/run.py                      # every scenario, 10 s each, 50 connections
    python bench/run.py --duration 30 --connections 100 --scenarios baseline,warm --repeat 3

Starts a fake Nango (bench/fake_nango.py), the proxy and the baseline (bench/baseline.py) as separate
uvicorn processes (uvloop, httptools, one worker) on loopback, drives them with wrk
(bench/assistant_request.lua) and prints a table; everything, logs included, lands in --out.
With two or more CPUs the servers are pinned to CPU 0 and wrk and the fake Nango to CPU 1.
Needs `wrk` on PATH (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from generate import (  # noqa: E402
    VAPI_SECRET,
    RoutingOptions,
    connection_id,
    environment,
    routing_yaml,
    user_order,
    write_requests,
)

SCENARIOS = (
    "baseline",
    "baseline-limited",
    "fixed",
    "warm",
    "warm-stock",
    "warm-index",
    "latency",
    "cold",
    "errors",
    "hang",
    "singleflight",
    "load",
)
SERVER_CPU, DRIVER_CPU = 0, 1
PYTHON = sys.executable
# The proxy runs under the protocol `serve` gives it (connection limits, proxy/http/connections.py); the
# warm-stock scenario runs it under uvicorn's stock httptools protocol, to price those limits, and the
# baseline-limited scenario runs the bare endpoint under the proxy's protocol: warm against it is what the
# proxy's own code costs, with the protocol's savings (one send(2) per answer) on both sides.
PROXY_HTTP = "proxy.http.connections:LimitedHttpToolsProtocol"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(cpu: int | None) -> dict[str, object]:
    if cpu is None:
        return {}
    return {"preexec_fn": lambda: os.sched_setaffinity(0, {cpu})}


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Bench:
    out: Path
    pin: bool
    duration: int
    connections: int
    threads: int
    users: int
    auth: str
    general_path: bool = False
    processes: list[Process] = field(default_factory=list)

    def cpu(self, which: int) -> int | None:
        return which if self.pin else None

    def start(self, name: str, argv: list[str], env: dict[str, str], cpu: int | None, ready: str) -> Process:
        port = free_port()
        argv = [arg.replace("{port}", str(port)) for arg in argv]
        log = (self.out / f"{name}.log").open("ab")
        popen = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=BENCH.parent, **pinned(cpu)
        )
        process = Process(name, popen, port)
        self.processes.append(process)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if popen.poll() is not None:
                raise RuntimeError(f"{name} exited with {popen.returncode}; see {self.out / (name + '.log')}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(process.url + ready, timeout=1).status_code < 500:
                    return process
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not start; see {self.out / (name + '.log')}")

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def fake_nango(self, **behaviour: object) -> Process:
        argv = [PYTHON, str(BENCH / "fake_nango.py"), "--port", "{port}", "--users", str(self.users)]
        for key, value in behaviour.items():
            flag = "--" + key.replace("_", "-")
            argv += [flag] if value is True else [flag, str(value)]
        return self.start("fake_nango", argv, {}, self.cpu(DRIVER_CPU), "/_stats")

    def uvicorn(self, name: str, app: str, env: dict[str, str], ready: str, http: str = "httptools") -> Process:
        argv = [PYTHON, "-m", "uvicorn", app, "--factory", "--host", "127.0.0.1", "--port", "{port}"]
        argv += ["--loop", "uvloop", "--http", http, "--workers", "1", "--no-access-log"]
        argv += ["--log-level", "warning", "--lifespan", "on", "--app-dir", str(BENCH)]
        return self.start(name, argv, env, self.cpu(SERVER_CPU), ready)

    def proxy(self, name: str, options: RoutingOptions, http: str = PROXY_HTTP) -> Process:
        path = self.out / f"{name}.routing.yaml"
        path.write_text(routing_yaml(options))
        env = {**environment(), "VAPI_CALENDAR_PROXY_CONFIG": str(path), "VAPI_CALENDAR_PROXY_LOG_FORMAT": "json"}
        factory = "general_path:create_app" if self.general_path else "proxy.server:app_from_environment"
        return self.uvicorn(name, factory, env, "/readyz", http)

    def baseline(self, answer: bytes, name: str = "baseline", http: str = "httptools") -> Process:
        path = self.out / "baseline.answer.json"
        path.write_bytes(answer)
        return self.uvicorn(name, "baseline:create_app", {"BENCH_BASELINE_ANSWER": str(path)}, "/", http)

    def requests_file(self, users: int | None = None) -> Path:
        path = self.out / f"requests.{self.auth}.{users or self.users}.tsv"
        if not path.exists():
            order = user_order(self.users, subset=users)
            write_requests(path, order, auth=self.auth, url="")
        return path

    def wrk(
        self, target: Process, *, duration: int | None = None, requests: Path | None = None, connections: int = 0
    ) -> dict[str, float]:
        connections = connections or self.connections
        threads = min(self.threads, connections)
        argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration or self.duration}s"]
        argv += ["--timeout", "10s", "-s", str(BENCH / "assistant_request.lua"), target.url + "/vapi", "--"]
        argv += [str(requests or self.requests_file())]
        user_before, system_before = process_cpu_times(target.popen.pid)
        done = subprocess.run(
            argv, capture_output=True, text=True, check=True, cwd=BENCH.parent, **pinned(self.cpu(DRIVER_CPU))
        )
        user_after, system_after = process_cpu_times(target.popen.pid)
        user, system = user_after - user_before, system_after - system_before
        cpu = user + system
        line = [row for row in done.stdout.splitlines() if row.startswith("{")][-1]
        raw = json.loads(line)
        seconds = raw["duration_us"] / 1e6
        return {
            "requests": raw["requests"],
            # The server's own CPU time (user + system) per request: steadier than req/s on a shared machine.
            "cpu_us": round(cpu / max(raw["requests"], 1) * 1e6, 2),
            # Split, because the kernel's share (socket calls, loopback delivery) is what a server's own
            # code cannot shrink but the number of its system calls can.
            "user_us": round(user / max(raw["requests"], 1) * 1e6, 2),
            "system_us": round(system / max(raw["requests"], 1) * 1e6, 2),
            "rps": round(raw["requests"] / seconds, 1),
            "p50_ms": raw["p50_us"] / 1000,
            "p90_ms": raw["p90_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000,
            "max_ms": raw["max_us"] / 1000,
            "non_200": raw["non_2xx_3xx"],
            "socket_errors": raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"],
        }


def process_cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of one process in seconds, from /proc/PID/stat (fields 14 and 15, in clock ticks)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def post_call(url: str, user: int) -> httpx.Response:
    from generate import PSTN_FIXTURE, request_body

    body = request_body(user, json.loads(PSTN_FIXTURE.read_text()))
    headers = {"X-Vapi-Secret": VAPI_SECRET, "Content-Type": "application/json"}
    return httpx.post(url + "/vapi", content=body, headers=headers, timeout=10)


def nango_stats(fake: Process) -> dict[str, int]:
    stats: dict[str, int] = httpx.get(fake.url + "/_stats").json()
    return stats


def proxy_counters(proxy: Process) -> dict[str, float]:
    """Nango requests and assistant-request outcomes, as the proxy's /metrics counts them."""
    text = httpx.get(proxy.url + "/metrics").text
    found: dict[str, float] = {}
    pattern = r"^vapi_proxy_(nango_requests|assistant_requests)_total\{(.*)\} (\S+)$"
    for match in re.finditer(pattern, text, re.MULTILINE):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        key = match.group(1) + ":" + ",".join(labels.values())
        found[key] = found.get(key, 0) + float(match.group(3))
    return found


def wait_for_index(proxy: Process, users: int) -> float:
    started = time.monotonic()
    while time.monotonic() - started < 60:
        nango = httpx.get(proxy.url + "/readyz").json().get("nango") or {}
        if nango.get("index_size") == users:
            return time.monotonic() - started
        time.sleep(0.05)
    raise RuntimeError("the proxy's Nango index never filled")


def burst(url: str, users: list[int], copies: int, connections: int = 500) -> tuple[list[int], list[float], list[str]]:
    """`copies` assistant-requests per user, each user's copies sent at the same time over `connections`
    keep-alive connections; statuses, latencies and the connection ids answered, in order."""
    from client import post_all
    from generate import PSTN_FIXTURE, request_body

    fixture = json.loads(PSTN_FIXTURE.read_text())
    bodies = [request_body(user, fixture) for user in users for _ in range(copies)]
    headers = {"X-Vapi-Secret": VAPI_SECRET, "Content-Type": "application/json"}
    host, port = url.removeprefix("http://").split(":")
    answers = asyncio.run(post_all(host, int(port), "/vapi", bodies, headers, connections))
    ids = []
    for answer in answers:
        credentials = orjson.loads(answer.body).get("assistant", {}).get("credentials", [{}])
        ids.append(credentials[0].get("authorizationId", ""))
    return [a.status for a in answers], [a.seconds for a in answers], ids


def check_answer(proxy: Process, user: int, expect_connection: str | None) -> None:
    response = post_call(proxy.url, user)
    assert response.status_code == 200, response.text
    if expect_connection is not None:
        credential = response.json()["assistant"]["credentials"][0]
        assert credential["authorizationId"] == expect_connection, credential


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    if len(runs) == 1:
        return runs[0]
    keys = runs[0].keys()
    merged = {key: statistics.median(run[key] for run in runs) for key in keys}
    merged["non_200"] = sum(run["non_200"] for run in runs)
    merged["socket_errors"] = sum(run["socket_errors"] for run in runs)
    merged["requests"] = sum(run["requests"] for run in runs)
    return merged


def throughput(bench: Bench, targets: dict[str, Process], repeat: int) -> dict[str, dict[str, float]]:
    """Alternate the targets run by run, so drift on a shared machine hits them alike. Each target's row is
    the median of its runs, plus (against the baseline) the median of the per-round ratios."""
    for target in targets.values():
        bench.wrk(target, duration=2)  # warm-up: connections, caches, allocator
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    for _ in range(repeat):
        for name, target in targets.items():
            runs[name].append(bench.wrk(target))
    rows = {name: median_run(found) for name, found in runs.items()}
    if "baseline" in runs:
        for name, found in runs.items():
            if name == "baseline":
                continue
            pairs = list(zip(found, runs["baseline"], strict=True))
            rows[name]["rps_ratio"] = round(statistics.median(run["rps"] / base["rps"] for run, base in pairs), 3)
            rows[name]["p99_ratio"] = round(statistics.median(run["p99_ms"] / base["p99_ms"] for run, base in pairs), 2)
            rows[name]["cpu_us_over_baseline"] = round(
                statistics.median(run["cpu_us"] - base["cpu_us"] for run, base in pairs), 2
            )
            rows[name]["rounds"] = [  # type: ignore[assignment]
                {
                    "rps_ratio": round(run["rps"] / base["rps"], 3),
                    "p99_ratio": round(run["p99_ms"] / base["p99_ms"], 2),
                    "cpu_us_over_baseline": round(run["cpu_us"] - base["cpu_us"], 2),
                }
                for run, base in pairs
            ]
    return rows


def run(args: argparse.Namespace) -> dict[str, object]:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    bench = Bench(out, pin, args.duration, args.connections, args.threads, args.users, args.auth, args.general_path)
    chosen = [s.strip() for s in args.scenarios.split(",")] if args.scenarios else list(SCENARIOS)
    results: dict[str, object] = {"settings": {**vars(args), "pinned": pin}, "machine": machine()}
    rows: dict[str, dict[str, object]] = {}
    results["scenarios"] = rows

    def proxy_options(fake: Process, **overrides: object) -> RoutingOptions:
        values: dict[str, object] = {"users": args.users, "nango_url": fake.url, "index_refresh_seconds": 0.0}
        values.update(overrides)
        return RoutingOptions(**values)  # type: ignore[arg-type]

    try:
        if {"baseline", "baseline-limited", "fixed", "warm", "warm-stock", "warm-index"} & set(chosen):
            fake = bench.fake_nango()
            targets: dict[str, Process] = {}
            notes: dict[str, dict[str, object]] = {}
            if {"warm", "baseline", "baseline-limited"} & set(chosen):
                warm = bench.proxy("warm", proxy_options(fake))
                started = time.monotonic()
                statuses, _, ids = burst(warm.url, list(range(args.users)), 1, connections=50)
                assert set(statuses) == {200} and ids == [connection_id(i) for i in range(args.users)]
                notes["warm"] = {
                    "nango_requests_to_warm": nango_stats(fake)["user_requests"],
                    "warm_up_s": round(time.monotonic() - started, 2),
                }
                targets["warm"] = warm
            if "warm-stock" in chosen:
                stock = bench.proxy("warm-stock", proxy_options(fake), http="httptools")
                statuses, _, ids = burst(stock.url, list(range(args.users)), 1, connections=50)
                assert set(statuses) == {200} and ids == [connection_id(i) for i in range(args.users)]
                targets["warm-stock"] = stock
            if "warm-index" in chosen:
                httpx.post(fake.url + "/_reset")
                indexed = bench.proxy("warm-index", proxy_options(fake, index_refresh_seconds=300.0))
                notes["warm-index"] = {"index_fill_s": round(wait_for_index(indexed, args.users), 2)}
                check_answer(indexed, 1, connection_id(1))
                statuses, _, ids = burst(indexed.url, list(range(args.users)), 1, connections=50)
                assert set(statuses) == {200} and ids == [connection_id(i) for i in range(args.users)]
                notes["warm-index"]["nango_list_pages"] = nango_stats(fake)["list_pages"]
                targets["warm-index"] = indexed
            if "fixed" in chosen:
                fixed = bench.proxy("fixed", proxy_options(fake, fixed_ids=True))
                check_answer(fixed, 2, connection_id(2))
                # One call per user first, as for "warm": each route's answer is prepared on its first call.
                statuses, _, ids = burst(fixed.url, list(range(args.users)), 1, connections=50)
                assert set(statuses) == {200} and ids == [connection_id(i) for i in range(args.users)]
                targets["fixed"] = fixed
            if {"baseline", "baseline-limited"} & set(chosen):
                answer = post_call(targets["warm"].url, 0).content  # the bare endpoints answer what the proxy does
                if "baseline-limited" in chosen:
                    targets = {"baseline-limited": bench.baseline(answer, "baseline-limited", PROXY_HTTP), **targets}
                if "baseline" in chosen:
                    targets = {"baseline": bench.baseline(answer), **targets}
                    notes["baseline"] = {"answer_bytes": len(answer)}
            httpx.post(fake.url + "/_reset")
            measured = throughput(bench, targets, args.repeat)
            if "latency" in chosen:
                # One connection, one request at a time: what a single call pays, with no queueing.
                for name, target in targets.items():
                    measured[f"{name} (1 connection)"] = bench.wrk(target, connections=1)
            for name, figures in measured.items():
                target = targets[name.split(" ")[0]]
                counters = proxy_counters(target) if not name.startswith("baseline") else {}
                rows[name] = {**figures, **notes.get(name, {}), "proxy_counters": counters}
            rows["_nango_during_warm_runs"] = nango_stats(fake)
            bench.stop_all()

        cold_cases = {
            "cold": ({"latency_ms": 200}, {}),
            "errors": ({"error_rate": 1.0}, {}),
            "hang": ({"hang": True}, {"deadline_seconds": args.hang_deadline, "read_timeout": 2.5}),
        }
        for name, (behaviour, routing) in cold_cases.items():
            if name not in chosen:
                continue
            fake = bench.fake_nango(**behaviour)
            proxy = bench.proxy(name, proxy_options(fake, **routing))
            figures = bench.wrk(proxy)
            rows[name] = {
                **figures,
                "nango": nango_stats(fake),
                "proxy_counters": proxy_counters(proxy),
                "deadline_s": routing.get("deadline_seconds", RoutingOptions.deadline_seconds),
            }
            bench.stop_all()

        if "singleflight" in chosen:
            fake = bench.fake_nango(latency_ms=200)
            proxy = bench.proxy("singleflight", proxy_options(fake))
            users = list(range(args.singleflight_users))
            started = time.perf_counter()
            statuses, latencies, ids = burst(proxy.url, users, args.singleflight_copies)
            elapsed = time.perf_counter() - started
            stats = nango_stats(fake)
            expected = [connection_id(u) for u in users for _ in range(args.singleflight_copies)]
            latencies.sort()
            rows["singleflight"] = {
                "cold_users": len(users),
                "concurrent_requests_per_user": args.singleflight_copies,
                "requests": len(statuses),
                "non_200": sum(1 for s in statuses if s != 200),
                "wrong_connection": sum(1 for got, want in zip(ids, expected, strict=True) if got != want),
                "nango": stats,
                "exactly_one_per_user": stats["users_looked_up"] == len(users) and stats["max_requests_per_user"] == 1,
                "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
                "max_ms": round(latencies[-1] * 1000, 1),
                "wall_s": round(elapsed, 2),
            }
            bench.stop_all()

        if "load" in chosen:
            for users in (10_000, 100_000):
                path = out / f"load.{users}.routing.yaml"
                path.write_text(routing_yaml(RoutingOptions(users=users)))
                probes = [
                    json.loads(
                        subprocess.run(
                            [PYTHON, str(BENCH / "load_probe.py"), str(path)],
                            env={**os.environ, **environment()},
                            capture_output=True,
                            text=True,
                            check=True,
                            cwd=BENCH.parent,
                        ).stdout
                    )
                    for _ in range(args.load_repeat)
                ]
                best = min(probes, key=lambda probe: probe["load_s"])
                rows[f"load-{users}"] = {**best, "file_mb": round(path.stat().st_size / 1e6, 1)}
                path.unlink()
    finally:
        bench.stop_all()
    return results


def machine() -> dict[str, object]:
    def command(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return ""

    import orjson
    import starlette
    import uvicorn
    import uvloop

    cpu = re.search(r"Model name:\s*(.*)", command("lscpu"))
    return {
        "cpu": cpu.group(1) if cpu else platform.processor(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvicorn": uvicorn.__version__,
        "uvloop": uvloop.__version__,
        "httptools": command(PYTHON, "-c", "import httptools; print(httptools.__version__)"),
        "starlette": starlette.__version__,
        "orjson": orjson.__version__,
        "wrk": command("wrk", "-v").splitlines()[0] if shutil.which("wrk") else "missing",
    }


def table(results: dict[str, object]) -> str:
    rows = results["scenarios"]
    assert isinstance(rows, dict)
    lines = [
        "| scenario | req/s | p50 ms | p99 ms | max ms | CPU µs/req | of it system | non-200 | socket errors "
        "| Nango requests |"
    ]
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        if name.startswith(("load-", "_", "singleflight")):
            continue
        nango = row.get("nango", {})
        counters = row.get("proxy_counters", {})
        sent = sum(v for k, v in counters.items() if k.startswith("nango_requests:"))
        lines.append(
            f"| {name} | {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['max_ms']:.1f} "
            f"| {row['cpu_us']:.1f} | {row.get('system_us', 0):.1f} | {row['non_200']} | {row['socket_errors']} "
            f"| {nango.get('requests', int(sent)) if counters else '-'} |"
        )
    if "baseline" in rows:
        lines.append("")
        for name, row in rows.items():
            if "rps_ratio" in row:
                lines.append(
                    f"{name} / baseline (median of the per-round ratios): throughput {row['rps_ratio']:.3f} "
                    f"(target >= 0.90), p99 {row['p99_ratio']:.2f}x (target <= 1.5x), "
                    f"server CPU {row['cpu_us_over_baseline']:+.1f} µs/request (target <= +10)"
                )
    warm, limited = rows.get("warm"), rows.get("baseline-limited")
    if warm and limited:
        lines.append(
            f"warm / baseline-limited (both on the proxy's protocol): throughput {warm['rps'] / limited['rps']:.3f}, "
            f"server CPU {warm['cpu_us'] - limited['cpu_us']:+.1f} µs/request (medians of the runs)"
        )
    warm, stock = rows.get("warm"), rows.get("warm-stock")
    if warm and stock:
        lines.append(
            f"warm (connection limits) / warm-stock (uvicorn's protocol): throughput {warm['rps'] / stock['rps']:.1%}, "
            f"server CPU {warm['cpu_us'] - stock['cpu_us']:+.1f} µs/request"
        )
    if "singleflight" in rows:
        sf = rows["singleflight"]
        lines.append(
            f"single-flight: {sf['requests']} requests for {sf['cold_users']} cold users "
            f"({sf['concurrent_requests_per_user']} at once each) -> {sf['nango']['user_requests']} Nango requests, "
            f"max {sf['nango']['max_requests_per_user']} per user, non-200 {sf['non_200']}, "
            f"wrong connection {sf['wrong_connection']}"
        )
    for name, row in rows.items():
        if name.startswith("load-"):
            lines.append(
                f"{name}: {row['load_s']:.2f} s (load_config {row['load_config_s']:.2f} s), "
                f"max RSS {row['max_rss_mb']:.0f} MB (after imports {row['rss_after_imports_mb']:.0f} MB)"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--scenarios", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of baseline/warm/fixed; medians")
    parser.add_argument("--auth", choices=("secret", "hmac"), default="secret", help="X-Vapi-Secret or HMAC")
    parser.add_argument("--hang-deadline", type=float, default=1.0, help="server.deadline_seconds when Nango hangs")
    parser.add_argument("--singleflight-users", type=int, default=200)
    parser.add_argument("--singleflight-copies", type=int, default=10)
    parser.add_argument("--load-repeat", type=int, default=3)
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and driver to separate CPUs")
    parser.add_argument(
        "--general-path", action="store_true", help="the proxy without proxy/http/fastpath.py (bench/general_path.py)"
    )
    parser.add_argument("--out", default=str(BENCH / "results"))
    args = parser.parse_args()
    if shutil.which("wrk") is None and set(SCENARIOS[:-1]) & set((args.scenarios or ",".join(SCENARIOS)).split(",")):
        sys.exit("wrk is not on PATH (Debian: apt-get install wrk)")
    results = run(args)
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    text = table(results)
    (out / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

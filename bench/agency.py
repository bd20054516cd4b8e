"""Agency mode's cost: the same users served as one business and as many tenants, measured in one run.

    python bench/agency.py                               # 50 tenants x 2,000 users, 10 s runs, 3 rounds
    python bench/agency.py --tenants 50 --users-per-tenant 2000 --duration 10 --repeat 3

Both servers run as bench/run.py runs the proxy (uvicorn, uvloop, the proxy's protocol, one worker, pinned
to CPU 0 with wrk on CPU 1) and answer the same users on the same numbers, warm: each user's connection
id is known (fixed in the files, as in bench/run.py's "fixed" scenario, so 100,000 users need no Nango
to warm) and each user is called once before measuring, which prepares its route's answer.
"single" is one routing file of tenants x users users at /vapi;
"agency" is an agency file of `--tenants` tenant files, tenant t's users at /vapi/t<t>, each tenant with
its own Vapi secret. wrk cycles through every user in the same shuffled order against both, runs
alternating, and the row's `rps_ratio` is the median of the per-round agency/single ratios.

Also reported per server: start to ready (process start to /readyz 200, the routing files loaded and
every tenant's runtime started) and RSS once warm.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from client import post_all  # noqa: E402
from generate import (  # noqa: E402
    PSTN_FIXTURE,
    VAPI_SECRET,
    RoutingOptions,
    connection_id,
    environment,
    request_body,
    routing_yaml,
    user_order,
)
from run import PROXY_HTTP, Bench, Process, machine, median_run  # noqa: E402


def tenant_id(t: int) -> str:
    return f"t{t:02d}"


def tenant_secret(t: int) -> str:
    return f"{VAPI_SECRET}-{tenant_id(t)}"


def tenant_of(user: int, per_tenant: int) -> int:
    return user // per_tenant


def agency_files(directory: Path, tenants: int, per_tenant: int, options: RoutingOptions) -> Path:
    """Tenant t's own file holds users t*per_tenant .. (t+1)*per_tenant-1: the single file's users, split.
    The server section is the agency file's; each tenant has its own Vapi secret."""
    single = routing_yaml(RoutingOptions(**{**vars(options), "users": tenants * per_tenant}))
    head, _, rest = single.partition("users:\n")
    user_lines, _, route_lines = rest.partition("routes:\n")
    users, routes = user_lines.splitlines(), route_lines.splitlines()
    server, _, settings = head.partition("auth:\n")
    tenant_head = "auth:\n" + settings.replace("${VAPI_SERVER_SECRET}", "__SECRET__")
    (directory / "tenants").mkdir(parents=True, exist_ok=True)
    lines = [server.rstrip(), "tenants:"]
    for t in range(tenants):
        chosen = slice(t * per_tenant, (t + 1) * per_tenant)
        text = tenant_head.replace("__SECRET__", tenant_secret(t))
        text += "users:\n" + "\n".join(users[chosen]) + "\nroutes:\n" + "\n".join(routes[chosen]) + "\n"
        (directory / "tenants" / f"{tenant_id(t)}.yaml").write_text(text)
        lines += [f"  {tenant_id(t)}:", f"    file: tenants/{tenant_id(t)}.yaml"]
    path = directory / "agency.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_requests(path: Path, order: list[int], per_tenant: int | None) -> None:
    """bench/assistant_request.lua's format; with `per_tenant`, each line carries its tenant's path and secret."""
    fixture = json.loads(PSTN_FIXTURE.read_text())
    with path.open("wb") as out:
        for i in order:
            headers = ["Content-Type: application/json"]
            if per_tenant is None:
                headers.append(f"X-Vapi-Secret: {VAPI_SECRET}")
            else:
                t = tenant_of(i, per_tenant)
                headers += [f"X-Vapi-Secret: {tenant_secret(t)}", f"X-Bench-Path: /vapi/{tenant_id(t)}"]
            out.write("\t".join(headers).encode() + b"\t\t" + request_body(i, fixture) + b"\n")


def warm_up(target: Process, users: list[int], per_tenant: int | None) -> None:
    """Every user called once (its connection looked up, its answer prepared); every answer checked."""
    fixture = json.loads(PSTN_FIXTURE.read_text())
    groups: dict[tuple[str, str], list[int]] = {}
    for i in users:
        key = (
            ("/vapi", VAPI_SECRET)
            if per_tenant is None
            else (
                f"/vapi/{tenant_id(tenant_of(i, per_tenant))}",
                tenant_secret(tenant_of(i, per_tenant)),
            )
        )
        groups.setdefault(key, []).append(i)
    host, port = target.url.removeprefix("http://").split(":")
    for (path, secret), group in groups.items():
        bodies = [request_body(i, fixture) for i in group]
        headers = {"X-Vapi-Secret": secret, "Content-Type": "application/json"}
        answers = asyncio.run(post_all(host, int(port), path, bodies, headers, 50))
        for i, answer in zip(group, answers, strict=True):
            assistant = json.loads(answer.body).get("assistant", {})
            credential = assistant.get("credentials", [{}])[0].get("authorizationId")
            assert answer.status == 200 and credential == connection_id(i), (path, i, answer.status, answer.body[:200])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def start(bench: Bench, name: str, config: Path) -> tuple[Process, float]:
    env = {**environment(), "VAPI_CALENDAR_PROXY_CONFIG": str(config), "VAPI_CALENDAR_PROXY_LOG_FORMAT": "json"}
    started = time.monotonic()
    process = bench.uvicorn(name, "proxy.server:app_from_environment", env, "/readyz", PROXY_HTTP)
    while httpx.get(process.url + "/readyz", timeout=5).status_code != 200:
        time.sleep(0.05)
    return process, round(time.monotonic() - started, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--users-per-tenant", type=int, default=2000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="rounds, each running both servers")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--out", default="bench/out/agency")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    users = args.tenants * args.users_per_tenant
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    bench = Bench(out, pin, args.duration, args.connections, args.threads, users, "secret")
    try:
        options = RoutingOptions(users=users, fixed_ids=True, index_refresh_seconds=0.0)
        single_file = out / "single.routing.yaml"
        single_file.write_text(routing_yaml(options))
        agency_file = agency_files(out / "agency", args.tenants, args.users_per_tenant, options)
        order = user_order(users)
        requests = {"single": out / "requests.single.tsv", "agency": out / "requests.agency.tsv"}
        write_requests(requests["single"], order, None)
        write_requests(requests["agency"], order, args.users_per_tenant)
        targets: dict[str, Process] = {}
        notes: dict[str, dict[str, object]] = {}
        for name, config in (("single", single_file), ("agency", agency_file)):
            process, ready_s = start(bench, name, config)
            warm_up(process, order, None if name == "single" else args.users_per_tenant)
            targets[name] = process
            notes[name] = {"start_to_ready_s": ready_s, "rss_warm_mb": rss_mb(process.popen.pid)}
        for name, target in targets.items():
            bench.wrk(target, duration=2, requests=requests[name])  # warm-up: connections, allocator
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        for _ in range(args.repeat):
            for name, target in targets.items():
                runs[name].append(bench.wrk(target, requests=requests[name]))
        rows = {name: {**median_run(found), **notes[name]} for name, found in runs.items()}
        pairs = list(zip(runs["agency"], runs["single"], strict=True))
        rows["agency"]["rps_ratio"] = round(statistics.median(a["rps"] / s["rps"] for a, s in pairs), 3)
        # The server's own CPU per request: steadier than req/s when the machine is shared.
        rows["agency"]["cpu_ratio"] = round(statistics.median(a["cpu_us"] / s["cpu_us"] for a, s in pairs), 3)
        rows["agency"]["rounds"] = [  # type: ignore[assignment]
            {"rps_ratio": round(a["rps"] / s["rps"], 3), "cpu_ratio": round(a["cpu_us"] / s["cpu_us"], 3)}
            for a, s in pairs
        ]
        for name, target in targets.items():
            rows[name]["rss_after_mb"] = rss_mb(target.popen.pid)
    finally:
        bench.stop_all()
    results = {"settings": vars(args), "machine": machine(), "rows": rows}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    heads = ("rps", "p50 ms", "p99 ms", "cpu us", "ready s", "RSS MB", "rps/cpu ratio")
    print(f"{'':8} {heads[0]:>9} {heads[1]:>7} {heads[2]:>7} {heads[3]:>7} {heads[4]:>8} {heads[5]:>7} {heads[6]:>14}")
    for name, row in rows.items():
        ratios = f"{row['rps_ratio']} / {row['cpu_ratio']}" if "rps_ratio" in row else ""
        print(
            f"{name:8} {row['rps']:>9} {row['p50_ms']:>7} {row['p99_ms']:>7} {row['cpu_us']:>7} "
            f"{row['start_to_ready_s']:>8} {row['rss_after_mb']:>7} {ratios:>14}"
        )
    print(f"(every figure in {out / 'results.json'})")


if __name__ == "__main__":
    main()

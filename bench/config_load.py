"""Config load at scale: `check` CPU time and `serve` memory for a routing file of N users (default 100,000).

    python bench/config_load.py [--users 100000] [--runs 3] [--style block|flow] [--check-only] [--against DIR]

`--style block` (the default) writes one key per line, as config.example.yaml does; `flow` puts each user
and route on one line. `--against DIR` also runs `check` from another checkout's source tree (e.g. one
made with `git worktree add`), in turn with this one: a before/after in the same run.

Measured in the same run, each in a fresh process:
- reference: `yaml.load(text, Loader=yaml.CSafeLoader)` of the same file (libyaml's C parser, PyYAML's
  constructor), CPU seconds;
- `vapi-calendar-proxy check`: CPU seconds of the whole command (interpreter start and imports included);
- `vapi-calendar-proxy serve`: RSS once ready (steady), then the peak RSS while a SIGHUP reload builds
  the next snapshot (VmHWM, reset through /proc/PID/clear_refs before each reload): once with one user
  edited (the usual change), once with a global variable edited (every route rebuilt: the worst case).
Prints medians and the ratios; the targets: check <= 1.5 s CPU, steady <= 150 MB, reload peak <= 1.5x steady.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.generate import RoutingOptions, environment, routing_yaml  # noqa: E402

PYTHON = sys.executable
CLI = [PYTHON, "-m", "proxy.cli"]
YAML_REFERENCE = "import sys, yaml; yaml.load(open(sys.argv[1]).read(), Loader=yaml.CSafeLoader)"


def child_cpu(command: list[str], env: dict[str, str], cwd: Path = ROOT) -> float:
    """CPU seconds (user + system) of one child process run to completion."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def readyz(port: int) -> dict[str, object] | None:
    import json

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            data: dict[str, object] = json.loads(response.read())
            return data
    except OSError:
        return None


def wait_for(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise TimeoutError("condition not met")


def reload_peak(process: subprocess.Popen[bytes], port: int, path: Path, text: str) -> float:
    """Peak RSS (MB) while `serve` reloads `path` rewritten as `text` on SIGHUP."""
    Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    old = (readyz(port) or {}).get("config")
    path.write_text(text)
    process.send_signal(signal.SIGHUP)
    wait_for(lambda: (readyz(port) or {}).get("config") != old, 120)
    peak = status_kb(process.pid, "VmHWM") / 1024
    time.sleep(1.0)
    return peak


def serve_memory(path: Path, env: dict[str, str]) -> tuple[float, float, float, float]:
    """(steady, peak reloading one edited user, peak reloading an edited global variable, after both), MB."""
    port = free_port()
    process = subprocess.Popen(
        [*CLI, "serve", "--config", str(path), "--port", str(port), "--log-level", "warning"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: (readyz(port) or {}).get("status") == "ready", 120)
        time.sleep(1.0)
        steady = status_kb(process.pid, "VmRSS") / 1024
        text = path.read_text()
        # The usual edit: one user changed (every other user and route is shared with the running snapshot).
        one_user = text.replace('"User 7"', '"User Seven"', 1)
        user_peak = reload_peak(process, port, path, one_user)
        # The worst case: a global variable changed, so every route is rebuilt.
        global_peak = reload_peak(process, port, path, one_user.replace("Bayview Health", "Bayview Health (edited)"))
        after = status_kb(process.pid, "VmRSS") / 1024
        path.write_text(text)
        return steady, user_peak, global_peak, after
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--style", choices=("block", "flow"), default="block")
    parser.add_argument("--check-only", action="store_true", help="skip the serve memory figures")
    parser.add_argument("--against", type=Path, help="another source tree whose check is measured in turn")
    args = parser.parse_args()
    env = {**os.environ, **environment(), "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "routing.yaml"
        path.write_text(routing_yaml(RoutingOptions(users=args.users, fixed_ids=True, style=args.style)))
        size = path.stat().st_size / 1_048_576
        reference, check, other = [], [], []
        for _ in range(args.runs):  # taken in turns, so all see the same load on a shared machine
            reference.append(child_cpu([PYTHON, "-c", YAML_REFERENCE, str(path)], env))
            check.append(child_cpu([*CLI, "check", "--config", str(path)], env))
            if args.against is not None:
                against = {**env, "PYTHONPATH": str(args.against)}  # and run from there: -m puts the cwd first
                other.append(child_cpu([*CLI, "check", "--config", str(path)], against, args.against))
        ref, chk = statistics.median(reference), statistics.median(check)
        print(f"{args.users:,} users, {args.style} style, {size:.1f} MiB file, median of {args.runs} runs")
        print(f"yaml.load (CSafeLoader) reference: {ref:.2f} s CPU  {sorted(round(r, 2) for r in reference)}")
        print(f"check:                             {chk:.2f} s CPU  {sorted(round(c, 2) for c in check)}")
        print(f"  -> check is {ref / chk:.1f}x faster than the reference (target: check <= 1.5 s)")
        if other:
            before = statistics.median(other)
            print(f"check from {args.against}: {before:.2f} s CPU  {sorted(round(c, 2) for c in other)}")
            print(f"  -> this tree's check takes {chk / before:.2f} of that")
        if args.check_only:
            return
        memory = [serve_memory(path, env) for _ in range(args.runs)]
    steady = statistics.median(m[0] for m in memory)
    user_peak = statistics.median(m[1] for m in memory)
    global_peak = statistics.median(m[2] for m in memory)
    after = statistics.median(m[3] for m in memory)
    print(f"serve RSS steady: {steady:.0f} MB (target <= 150 MB)")
    print(f"serve RSS peak reloading one edited user: {user_peak:.0f} MB = {user_peak / steady:.2f}x steady")
    print(f"serve RSS peak reloading a global edit:   {global_peak:.0f} MB = {global_peak / steady:.2f}x steady")
    print("  (target: <= 1.5x steady during a reload)")
    print(f"serve RSS after both reloads: {after:.0f} MB")


if __name__ == "__main__":
    main()

"""Load time and memory of one routing file: `python bench/load_probe.py routing.yaml` prints one JSON line.

Run in a fresh process so ru_maxrss is this load's peak, not the benchmark driver's.
"""

from __future__ import annotations

import json
import sys
import time


def status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    started = time.perf_counter()
    from proxy.app import create_app
    from proxy.config import load_config

    imported = time.perf_counter()
    rss_imported = status_mb("VmRSS")
    config = load_config(sys.argv[1])
    loaded = time.perf_counter()
    create_app(config)
    created = time.perf_counter()
    result = {
        "users": len(config.users),
        "import_s": round(imported - started, 3),
        "load_config_s": round(loaded - imported, 3),
        "create_app_s": round(created - loaded, 3),
        "load_s": round(created - imported, 3),
        "rss_after_imports_mb": round(rss_imported, 1),
        "rss_mb": round(status_mb("VmRSS"), 1),
        # VmHWM, not ru_maxrss: on Linux ru_maxrss carries over the parent's peak through fork and exec.
        "max_rss_mb": round(status_mb("VmHWM"), 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""The config package's shape: no import cycles through it, a snapshot free of I/O modules, small modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROXY = ROOT / "proxy"
IO_PACKAGES = {"httpx", "starlette", "uvicorn", "anyio", "redis", "asyncio", "socket", "ssl", "h11", "httptools"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the proxy modules it imports anywhere (functions and TYPE_CHECKING blocks included)."""
    modules = {module_name(path): path for path in PROXY.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {target for target in found if target in modules and target != name}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_config_package_imports_nothing_that_imports_it_back() -> None:
    graph = import_graph()
    config = {name for name in graph if name == "proxy.config" or name.startswith("proxy.config.")}
    for name in sorted(config | {"proxy.routing"}):
        assert name not in reachable(graph, name), f"{name} is part of an import cycle"
    outside = set().union(*(reachable(graph, name) for name in config)) - config
    assert outside <= {"proxy.numbers", "proxy.secret", "proxy.slots", "proxy.tags"}, outside


def test_a_config_snapshot_loads_no_io_module() -> None:
    code = "import sys, proxy.config; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert not IO_PACKAGES & set(ast.literal_eval(loaded.stdout))


def test_config_modules_stay_under_400_lines() -> None:
    for path in [*sorted((PROXY / "config").glob("*.py")), PROXY / "reload.py", PROXY / "routing.py"]:
        assert len(path.read_text().splitlines()) <= 400, path.name

"""The package's shape: imports that go one way down the layers, no import cycles (TYPE_CHECKING-only ones
included), no module over 400 lines, a short top level, and a config snapshot that imports no I/O module. Each
rule is also run on a small broken package, so it can fail."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROXY = ROOT / "proxy"
MAX_LINES = 400
# Top to bottom: a module imports its own layer or the ones below it, never one above. Entry points wire
# everything; leaves use nothing of ours. A name is a package (with its modules) or one top-level module.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__", "cli", "offline", "admin", "server", "app", "agency", "reload", "runtime", "startup"),
    ("http",),
    ("vapi",),
    ("shared",),
    ("calendar",),
    ("nango",),
    ("config",),
    ("logs", "metrics", "numbers", "secret"),
)
MAX_TOP_LEVEL_MODULES = 16
IO_PACKAGES = {"httpx", "starlette", "uvicorn", "anyio", "redis", "asyncio", "socket", "ssl", "h11", "httptools"}


def module_name(path: Path, package: Path = PROXY) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(name: str, path: Path) -> set[str]:
    """Every module name `path` imports anywhere: top level, functions and `if TYPE_CHECKING:` blocks.
    `from a import b` names both `a` and `a.b` (b may be a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph(package: Path = PROXY) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Module -> the package's modules it imports, and module -> the top-level names of everything else."""
    modules = {module_name(path, package): path for path in sorted(package.rglob("*.py"))}
    internal: dict[str, set[str]] = {}
    external: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = imported_names(name, path)
        internal[name] = {target for target in found if target in modules and target != name}
        external[name] = {target.partition(".")[0] for target in found if target.partition(".")[0] != package.name}
    return internal, external


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def shortest_path(graph: dict[str, set[str]], start: str, goal: str) -> list[str]:
    """The fewest imports leading from `start` to `goal` (breadth first), both ends included."""
    previous: dict[str, str | None] = {start: None}
    todo = [start]
    for name in todo:
        for target in sorted(graph[name]):
            if target == goal:
                path = [goal, name]
                while (before := previous[path[-1]]) is not None:
                    path.append(before)
                return path[::-1]
            if target not in previous:
                previous[target] = name
                todo.append(target)
    raise ValueError(f"{goal} is not reachable from {start}")


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    """One shortest cycle per group of modules that import each other, as "a -> b -> a"; none when acyclic."""
    reach = {name: reachable(graph, name) for name in graph}
    named: set[str] = set()
    cycles: list[str] = []
    for start in sorted(graph):
        if start in named or start not in reach[start]:
            continue
        named.update(name for name in reach[start] if start in reach[name])
        cycles.append(" -> ".join(shortest_path(graph, start, start)))
    return cycles


def long_modules(package: Path = PROXY) -> list[str]:
    lengths = {path: len(path.read_text().splitlines()) for path in sorted(package.rglob("*.py"))}
    return [f"{path.relative_to(package.parent)}: {n} lines" for path, n in lengths.items() if n > MAX_LINES]


def io_imports(package: Path = PROXY, subpackage: str = "config") -> list[str]:
    """How the subpackage reaches an I/O library, one chain per importer: "proxy.config.x -> proxy.nango -> httpx"."""
    internal, external = import_graph(package)
    prefix = f"{package.name}.{subpackage}"
    inside = sorted(name for name in internal if name == prefix or name.startswith(prefix + "."))
    previous: dict[str, str | None] = dict.fromkeys(inside)
    chains: list[str] = []
    todo = list(inside)
    for name in todo:
        for library in sorted(external[name] & IO_PACKAGES):
            path = [library, name]
            while (before := previous[path[-1]]) is not None:
                path.append(before)
            chains.append(" -> ".join(reversed(path)))
        for target in sorted(internal[name]):
            if target not in previous:
                previous[target] = name
                todo.append(target)
    return chains


def layer_of(name: str, package: str = "proxy") -> int | None:
    parts = name.split(".")
    if parts == [package]:
        return None  # the package's own __init__: the version only
    for index, members in enumerate(LAYERS):
        if parts[1] in members:
            return index
    raise AssertionError(f"{name} is in no layer: add it to LAYERS in tests/test_structure.py")


def upward_imports(package: Path = PROXY) -> list[str]:
    """Every import that goes up the layer order (or out of a leaf), as "importer -> imported"."""
    internal, _ = import_graph(package)
    found: list[str] = []
    leaves = len(LAYERS) - 1
    for name, targets in sorted(internal.items()):
        low = layer_of(name, package.name)
        for target in sorted(targets):
            high = layer_of(target, package.name)
            if low is None or high is None:
                continue
            if high < low or (low == leaves and target != name):
                found.append(f"{name} -> {target}")
    return found


def top_level_modules(package: Path = PROXY) -> list[str]:
    return sorted(path.name for path in package.glob("*.py"))


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "proxy" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "proxy"


def test_proxy_has_no_import_cycle() -> None:
    internal, _ = import_graph()
    assert import_cycles(internal) == []


def test_imports_go_down_the_layers() -> None:
    assert upward_imports() == []


def test_the_top_level_holds_entry_points_and_leaves_only() -> None:
    modules = top_level_modules()
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules
    for path in PROXY.glob("*.py"):
        if path.stem != "__init__":
            layer_of(f"proxy.{path.stem}")


def test_an_upward_import_is_reported(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "nango/__init__.py": "",
            "nango/client.py": "from proxy.vapi import service\n",
            "vapi/__init__.py": "",
            "vapi/service.py": "from proxy.nango import client\nfrom proxy import numbers\n",
            "numbers.py": "from proxy import secret\n",
            "secret.py": "",
        },
    )
    assert upward_imports(package) == [
        "proxy.nango.client -> proxy.vapi",
        "proxy.nango.client -> proxy.vapi.service",
        "proxy.numbers -> proxy.secret",
    ]


def test_no_module_in_proxy_is_over_400_lines() -> None:
    assert long_modules() == []


def test_the_config_package_imports_no_io_module_even_for_type_checking() -> None:
    assert io_imports() == []


def test_the_config_package_imports_nothing_that_imports_it_back() -> None:
    graph, _ = import_graph()
    config = {name for name in graph if name == "proxy.config" or name.startswith("proxy.config.")}
    for name in sorted(config):
        assert name not in reachable(graph, name), f"{name} is part of an import cycle"
    outside = set().union(*(reachable(graph, name) for name in config)) - config
    assert outside <= {"proxy.numbers", "proxy.secret"}, outside


def test_a_config_snapshot_loads_no_io_module() -> None:
    code = "import sys, proxy.config; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert not IO_PACKAGES & set(ast.literal_eval(loaded.stdout))


def test_a_type_checking_only_cycle_is_found_and_named(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "tools.py": "from proxy.booking import Outcome\nfrom proxy import leaf\n",
            "booking.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from proxy.tools import Context\n",
            "leaf.py": "import httpx\n",
            "app.py": "def lazy() -> None:\n    from .fastpath import FastPath\n",
            "fastpath.py": "from . import app\n",
        },
    )
    internal, _ = import_graph(package)
    assert import_cycles(internal) == [
        "proxy.app -> proxy.fastpath -> proxy.app",
        "proxy.booking -> proxy.tools -> proxy.booking",
    ]


def test_a_three_module_cycle_is_named_once(tmp_path: Path) -> None:
    package = write_package(
        tmp_path, {"a.py": "import proxy.b\n", "b.py": "import proxy.c\n", "c.py": "import proxy.a\n"}
    )
    internal, _ = import_graph(package)
    assert import_cycles(internal) == ["proxy.a -> proxy.b -> proxy.c -> proxy.a"]


def test_a_module_over_400_lines_is_reported(tmp_path: Path) -> None:
    package = write_package(tmp_path, {"short.py": "x = 1\n" * MAX_LINES, "long.py": "x = 1\n" * (MAX_LINES + 1)})
    assert long_modules(package) == [f"proxy/long.py: {MAX_LINES + 1} lines"]


def test_an_io_module_reached_from_config_is_reported_with_its_chain(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "config/__init__.py": "from proxy.config.snapshot import Config\n",
            "config/snapshot.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from proxy import nango\n",
            "nango.py": "import httpx\n",
            "numbers.py": "import re\n",
        },
    )
    assert io_imports(package) == ["proxy.config.snapshot -> proxy.nango -> httpx"]


def test_every_sub_package_is_installed() -> None:
    """A non-editable install (the image's) ships only the packages pyproject lists."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {module_name(path.parent / "__init__.py") for path in PROXY.rglob("__init__.py")}
    assert packages <= listed, sorted(packages - listed)


def test_the_tests_mirror_the_packages() -> None:
    """tests/<package>/ for every sub-package of proxy/ and for nothing else; a test module of a package's
    module lives there, not at the top (the top holds the entry points', leaves' and whole-app tests)."""
    packages = {path.parent.name for path in PROXY.glob("*/__init__.py")}
    folders = {path.parent.name for path in (ROOT / "tests").glob("*/__init__.py")}
    assert folders == packages
    for package in packages:
        modules = {path.stem for path in (PROXY / package).glob("*.py")} - {"__init__"}
        misplaced = [f"tests/test_{module}.py" for module in modules if (ROOT / "tests" / f"test_{module}.py").exists()]
        assert not misplaced, f"belong in tests/{package}/: {misplaced}"

"""The docs are reference for today: every repository path and module they name exists, every link and anchor
resolves, no page outgrows a reader's patience, and no page tells the story of past runs (that is
bench/RESULTS.md's and CHANGELOG.md's job, which may name what has since moved)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HISTORY = [ROOT / "CHANGELOG.md", ROOT / "bench" / "RESULTS.md"]
README_MAX_BYTES = 11_000  # "about 10 KB"
PAGE_MAX_BYTES = 25_600  # "no page over about 25 KB"
GENERATED = {"bench/results/"}  # written by bench/run.py, ignored by git

# A repository path: one of the repository's top-level folders, then a path, not inside a URL or another path.
PATH = re.compile(r"(?<![\w./:-])((?:proxy|bench|deploy|scripts|tests|docs|\.ci)/[\w.*/-]*)")
# A module of the package, written with dots: `proxy.http.connections` or `proxy.server:app_from_environment`.
MODULE = re.compile(r"`(proxy(?:\.\w+)+)(?::(\w+))?`")
# Prose that narrates the past instead of describing today.
HISTORY_PROSE = re.compile(
    r"\bissue \d+|this session|this round|earlier the same|an earlier version|the issue measured|before this",
    re.IGNORECASE,
)


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def named_paths(text: str) -> set[str]:
    return {match.rstrip(".,:;") for match in PATH.findall(text)}


def path_exists(name: str) -> bool:
    if name in GENERATED:
        return True
    if "*" in name:
        return any(ROOT.glob(name))
    return (ROOT / name).exists()


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but hyphens dropped, spaces to hyphens."""
    found = set()
    in_fence = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and (heading := re.match(r"#+ (.*)", line)):
            found.add(re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-"))
    return found


def module_resolves(dotted: str, attribute: str | None) -> bool:
    """The longest prefix that is a module of the package is imported; what follows must be its attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 1, -1):
        base = ROOT.joinpath(*parts[:cut])
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            target: object = importlib.import_module(".".join(parts[:cut]))
            for name in [*parts[cut:], *([attribute] if attribute else [])]:
                if not hasattr(target, name):
                    return False
                target = getattr(target, name)
            return True
    return False


@pytest.mark.parametrize("page", REFERENCE, ids=page_id)
def test_every_repository_path_a_page_names_exists(page: Path) -> None:
    missing = sorted(name for name in named_paths(page.read_text(encoding="utf-8")) if not path_exists(name))
    assert missing == [], f"{page_id(page)} names paths that do not exist"


@pytest.mark.parametrize("page", REFERENCE, ids=page_id)
def test_every_module_a_page_names_exists(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    missing = sorted({f"{d}:{a}" if a else d for d, a in MODULE.findall(text) if not module_resolves(d, a or None)})
    assert missing == [], f"{page_id(page)} names modules or attributes that do not exist"


@pytest.mark.parametrize("page", [*REFERENCE, *HISTORY], ids=page_id)
def test_every_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target, anchor in re.findall(r"\]\(([^)#:\s]*)(?:#([^)\s]*))?\)", page.read_text(encoding="utf-8")):
        linked = (page.parent / target).resolve() if target else page
        if not linked.exists():
            broken.append(f"{target} (missing)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}#{anchor} (no such heading)")
    assert broken == [], f"{page_id(page)} has broken links"


@pytest.mark.parametrize("page", REFERENCE, ids=page_id)
def test_no_page_outgrows_its_bound(page: Path) -> None:
    bound = README_MAX_BYTES if page.name == "README.md" else PAGE_MAX_BYTES
    size = len(page.read_bytes())
    assert size <= bound, f"{page_id(page)} is {size} bytes, over {bound}: split it or move history out"


@pytest.mark.parametrize("page", REFERENCE, ids=page_id)
def test_no_page_narrates_past_runs(page: Path) -> None:
    found = [m.group(0) for m in HISTORY_PROSE.finditer(page.read_text(encoding="utf-8"))]
    assert found == [], f"{page_id(page)} tells history; it belongs in CHANGELOG.md or bench/RESULTS.md"


def test_the_checks_see_what_they_look_for() -> None:
    """The patterns find what a page would write, so an empty result above means something."""
    assert named_paths("see proxy/config/gone.py, and `bench/run.py`.") == {"proxy/config/gone.py", "bench/run.py"}
    assert named_paths("https://example.com/proxy/x.py /etc/proxy/x") == set()
    assert not path_exists("proxy/config/gone.py") and path_exists("deploy/kubernetes/") and path_exists("docs/*.md")
    assert MODULE.findall("`proxy.server:app_from_environment` and `proxy.http.connections`") == [
        ("proxy.server", "app_from_environment"),
        ("proxy.http.connections", ""),
    ]
    assert module_resolves("proxy.http.connections.LimitedHttpToolsProtocol", None)
    assert not module_resolves("proxy.yamlsource", None)
    assert not module_resolves("proxy.server", "no_such_factory")
    assert "several-replicas-with-redis-optional" in anchors(ROOT / "docs" / "scaling.md")
    assert HISTORY_PROSE.search("Earlier the same afternoon") and HISTORY_PROSE.search("issue 11's figures")

"""The lock files say what the image installs: they must satisfy pyproject.toml (else run scripts/lock)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# The image's platform: the lock is universal, this is the environment its markers are checked for.
IMAGE = {"sys_platform": "linux", "platform_system": "Linux", "python_version": "3.11", "python_full_version": "3.11.2"}
PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+)(?: ; (?P<marker>[^\\]+?))? \\$")


def pins(lock: str) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) for every requirement of a uv/pip-tools lock file."""
    found: dict[str, tuple[str, int]] = {}
    name = None
    for line in (ROOT / lock).read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            name = canonicalize_name(match["name"])
            found[name] = (match["version"], 0)
        elif name is not None and line.strip().startswith("--hash=sha256:"):
            version, hashes = found[name]
            found[name] = (version, hashes + 1)
    return found


def assert_satisfied(requirements: list[str], lock: str) -> None:
    locked = pins(lock)
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate(IMAGE):
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{lock} lacks {requirement.name}: run scripts/lock"
        version, _ = locked[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock} pins {name}=={version}, pyproject.toml asks for {requirement}: run scripts/lock"
        )


def test_runtime_lock_satisfies_pyproject() -> None:
    assert_satisfied(PYPROJECT["project"]["dependencies"], "requirements.lock")


def test_build_lock_satisfies_build_system() -> None:
    assert_satisfied(PYPROJECT["build-system"]["requires"], "requirements-build.lock")


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-build.lock"])
def test_every_pin_is_hashed(lock: str) -> None:
    locked = pins(lock)
    assert locked
    assert [name for name, (_, hashes) in locked.items() if hashes == 0] == []


def test_lean_dependencies() -> None:
    """No geodata (phonenumbers' full build), no server extras the proxy never runs, time zones shipped."""
    locked = pins("requirements.lock")
    assert "phonenumberslite" in locked and "phonenumbers" not in locked
    assert "tzdata" in locked
    assert not {"websockets", "watchfiles", "python-dotenv", "pip", "setuptools"} & set(locked)

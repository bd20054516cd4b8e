"""scripts/lint-deploy on a machine without promtool: it runs every other check and says what it skipped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def path_without(tool: str, directory: Path) -> str:
    """A PATH with this venv's tools and every other program on PATH, but not `tool` (a venv's python must
    stay in its own directory to be the venv's)."""
    directory.mkdir()
    venv = Path(sys.executable).parent
    assert not (venv / tool).exists()
    for place in os.environ["PATH"].split(os.pathsep):
        if not place or not Path(place).is_dir() or Path(place) == venv:
            continue
        for program in Path(place).iterdir():
            link = directory / program.name
            if program.name != tool and not link.exists() and os.access(program, os.X_OK):
                link.symlink_to(program)
    return f"{venv}{os.pathsep}{directory}"


def test_lint_deploy_without_promtool_runs_the_other_checks_and_names_the_skipped_one(tmp_path: Path) -> None:
    env = {"PATH": path_without("promtool", tmp_path / "bin"), "HOME": os.environ.get("HOME", "/tmp")}
    env["K8S_VERSIONS"] = "1.37.0"  # one schema version is enough here: CI lints against both
    done = subprocess.run(
        ["scripts/lint-deploy"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "skipped: promtool not on PATH (Debian: apt-get install prometheus)" in out
    assert "lint-deploy: skipped alert rules and their unit tests (no promtool" in out
    assert "objects checked, 0 problems" in out  # the checks after the missing tool's still ran
    assert "deploy/kubernetes/config.yaml: ok" in out
    assert out.rstrip().endswith("check(s) skipped (above)")

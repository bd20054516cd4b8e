"""Routing files on disk, changed the ways admins and Kubernetes change them (reload and server tests)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

NUMBER = "+16505550100"
# Two configs that route the same number to different users: an answer built from both would show.
EDITIONS = {"A": ("alice", "Alice Adams"), "B": ("bob", "Bob Brown")}


def routing_yaml(
    edition: str = "A", *, server: Mapping[str, object] | None = None, nango_url: str = "https://nango.test"
) -> str:
    """A complete config: edition A routes NUMBER to alice, edition B to bob (both looked up in Nango).

    `dave` exists in every edition, so his cache entry must survive reloads."""
    user_id, name = EDITIONS[edition]
    server_yaml = "".join(f"  {key}: {value}\n" for key, value in {"reload_poll_seconds": 0, **(server or {})}.items())
    return f"""\
version: 1
server:
{server_yaml}auth:
  vapi_secrets: ["${{VAPI_SERVER_SECRET}}"]
nango:
  base_url: {nango_url}
  secret_key: nango-test-secret-key
  index_refresh_seconds: 0
variables:
  edition: "{edition}"
templates:
  default:
    firstMessage: "[{{{{edition}}}}] You reached {{{{user_name}}}}."
    model:
      provider: openai
      model: gpt-4o
      messages: [{{role: system, content: "Edition {{{{edition}}}}: you answer for {{{{user_name}}}}."}}]
users:
  - id: {user_id}
    name: {name}
    timezone: Europe/Paris
  - {{id: dave, name: Dave Diaz, timezone: UTC}}
routes:
  - {{to: "{NUMBER}", user: {user_id}}}
  - {{to: "+1 650 555 0144", user: dave}}
"""


def replace_file(path: Path, text: str) -> None:
    """Save the way editors do: write a new file, then rename it over the old name."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    os.replace(fresh, path)


def kubernetes_mount(directory: Path, text: str, name: str = "config.yaml") -> Path:
    """A ConfigMap volume as the kubelet lays it out: name -> ..data/name, ..data -> ..<timestamp>."""
    directory.mkdir(parents=True, exist_ok=True)
    kubernetes_swap(directory, text, name)
    (directory / name).symlink_to(Path("..data") / name)
    return directory / name


def kubernetes_swap(directory: Path, text: str, name: str = "config.yaml") -> None:
    """The kubelet's update: a new timestamped directory, then one atomic rename of the ..data symlink."""
    generation = len(list(directory.glob("..2*")))
    version = directory / f"..2026_11_26_{generation:04d}"
    version.mkdir()
    (version / name).write_text(text)
    link = directory / "..data_tmp"
    link.symlink_to(version.name)
    os.replace(link, directory / "..data")

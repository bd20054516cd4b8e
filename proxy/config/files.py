"""The config files on disk: reading them, the version (content hash) they load as, and `include` globs."""

from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path as FilePath

from proxy.config.snapshot import Config
from proxy.config.yamlsource import ConfigError, ConfigIssue

__all__ = ["config_version", "current_version", "expand_includes", "read_config_text"]

_CHUNK = 1 << 20


def read_config_text(file: str) -> str:
    try:
        return FilePath(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(file, None, (), f"cannot read: {exc.__class__.__name__}: {exc}")]) from None


def config_version(text: str, *included: str) -> str:
    """The `Config.version` that `text` (with these included texts) would load as: a hash of the content."""
    digest = hashlib.sha256()
    for number, content in enumerate((text, *included)):
        if number:
            digest.update(b"\0")
        # In 1 MiB pieces: a loaded file's whole UTF-8 copy would add its size to the peak of a reload.
        for start in range(0, len(content), _CHUNK):
            digest.update(content[start : start + _CHUNK].encode())
    return digest.hexdigest()[:12]


def expand_includes(main_file: str, patterns: tuple[str, ...] | list[str]) -> list[str]:
    """The files `include` patterns name, relative to the main file's directory, globs sorted."""
    base = os.path.dirname(os.path.abspath(main_file))
    names: list[str] = []
    for pattern in patterns:
        full = os.path.join(base, pattern)  # an absolute pattern stays absolute
        names.extend(sorted(glob.glob(full)) if glob.has_magic(full) else [full])
    return [os.path.abspath(name) for name in names]


def current_version(config: Config) -> str | None:
    """The version the files of `config` would load as now, if they are still the same files; else None.

    Read in chunks: a reload first asks this, on a worker thread, and a whole 13 MB file read and encoded
    there stays in that thread's heap (glibc keeps it) as ~26 MB of the server's steady RSS."""
    if not config.files:
        return None
    if expand_includes(config.files[0], config.include_patterns) != list(config.files[1:]):
        return None
    digest = hashlib.sha256()
    for number, name in enumerate(config.files):
        if number:
            digest.update(b"\0")
        try:
            # Text mode, as `read_config_text` reads: the same newlines, the same decoding errors.
            with open(name, encoding="utf-8") as file:
                while chunk := file.read(_CHUNK):
                    digest.update(chunk.encode())
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([ConfigIssue(name, None, (), f"cannot read: {exc.__class__.__name__}: {exc}")]) from None
    return digest.hexdigest()[:12]

"""Config hot reload: notice that the routing file changed (stat polling, like uvicorn's statreload)
or receive SIGHUP, validate the new file off the event loop, and swap it in only when it is valid.

The file is watched through its symlinks and as a name: Kubernetes updates a mounted ConfigMap by
swapping a `..data` symlink, and editors save by writing a new file and renaming it over the old one.
Either way the inode behind the path changes, which `os.stat` (following links) and `os.lstat` see.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import os
import signal
import threading
from collections.abc import Callable
from typing import Literal, Protocol

from proxy.config import Config, ConfigError, ConfigIssue, parse_config, read_config_text
from proxy.config.files import current_version, expand_includes
from proxy.logs import get_logger
from proxy.metrics import Metrics

__all__ = ["ConfigWatcher", "Reloadable", "fingerprint", "release_memory", "watched_fingerprint"]

logger = get_logger("reload")

ReloadResult = Literal["ok", "unchanged", "invalid"]
Fingerprint = tuple[object, ...]

# A changed file must look the same twice this far apart before it is read: a save in progress is
# then read once finished rather than half-written (which would count as an invalid reload).
SETTLE_SECONDS = 0.05

NO_AUTH = "no Vapi authentication configured (vapi_secrets, bearer or hmac); refusing to serve it"


class Reloadable(Protocol):
    """What the watcher reloads: `proxy.app.Runtime`."""

    config: Config
    config_error: ConfigError | None
    metrics: Metrics
    insecure: bool

    def apply(self, config: Config) -> None: ...


def fingerprint(path: str) -> Fingerprint | None:
    """What changes when the file behind `path` does; None while there is no file."""
    try:
        target = os.stat(path)
        name = os.lstat(path)
    except OSError:
        return None
    return (target.st_dev, target.st_ino, target.st_size, target.st_mtime_ns, name.st_ino, name.st_mtime_ns)


def release_memory(*, collect: bool = False) -> None:
    """Hand the memory a load freed back to the OS. Loading a large file frees as much as it keeps (the
    parsed YAML), and glibc keeps freed heap unless trimmed: for 100,000 users about 30 MB of RSS.
    `collect` runs the cyclic GC first (at start-up only: it would hold the event loop while serving)."""
    if collect:
        gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def watched_fingerprint(config: Config) -> Fingerprint:
    """What changes when the main file, an included file, or the set of files an include matches does."""
    names = (config.files[0], *expand_includes(config.files[0], config.include_patterns)) if config.files else ()
    return tuple((name, fingerprint(name)) for name in names)


class ConfigWatcher:
    """Reloads `path` into `target` when the file changes (every `server.reload_poll_seconds`, 0 = off)
    and on SIGHUP, from `start()` until its task is cancelled."""

    def __init__(self, path: str, target: Reloadable) -> None:
        self.path = path
        self.target = target
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._seen: Fingerprint = watched_fingerprint(target.config)

    def trigger(self) -> None:
        """Reload as soon as possible (the SIGHUP handler). Call from the event loop's thread."""
        self._wake.set()

    async def start(self) -> asyncio.Task[None]:
        """Catch up with a change made since the first load (silently if none), then watch in a task."""
        await self.reload("start", quiet=True)
        return asyncio.create_task(self.run(), name="config-watcher")

    async def run(self) -> None:
        remove_handler = self._install_sighup()
        try:
            while True:
                interval = self.target.config.server.reload_poll_seconds
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=interval or None)
                try:
                    if self._wake.is_set():
                        self._wake.clear()
                        await self.reload("SIGHUP")
                    elif await self._changed():
                        await self.reload("file changed")
                except Exception:  # the watcher must outlive any bug in one reload
                    logger.exception("config reload crashed; the running config stays")
        finally:
            remove_handler()

    async def _changed(self) -> bool:
        current = watched_fingerprint(self.target.config)
        if current == self._seen:
            return False
        await asyncio.sleep(SETTLE_SECONDS)
        return watched_fingerprint(self.target.config) == current

    async def reload(self, reason: str, *, quiet: bool = False) -> ReloadResult:
        """Read, validate and (when valid and different) apply the file. Never raises ConfigError."""
        async with self._lock:
            old = self.target.config
            self._seen = watched_fingerprint(old)
            try:
                if await asyncio.to_thread(current_version, old) == old.version:
                    return self._unchanged(reason, quiet)
                text = await asyncio.to_thread(read_config_text, self.path)
                new = await asyncio.to_thread(parse_config, text, self.path, os.environ, running=old)
                if not new.auth.configured and not self.target.insecure:
                    # `serve` refuses to start like this; served, it would answer every call 401.
                    raise ConfigError([ConfigIssue(self.path, None, ("auth",), NO_AUTH)])
                if new.version == old.version:
                    return self._unchanged(reason, quiet)
                self.target.apply(new)
            except ConfigError as exc:
                return self._invalid(reason, old, exc)
            except Exception as exc:  # any failure is an invalid reload: counted, alerting, the old config stays
                logger.exception("config reload failed")
                issue = ConfigIssue(self.path, None, (), f"could not be applied ({type(exc).__name__})")
                return self._invalid(reason, old, ConfigError([issue]))
            self._seen = watched_fingerprint(new)
            old_version = old.version
            del old
            await asyncio.to_thread(release_memory)  # ctypes lets go of the GIL: the loop keeps serving
            self.target.metrics.config_reloads.labels("ok").inc()
            self.target.metrics.config_file_invalid.set(0)
            logger.info(
                "config reloaded",
                extra={
                    "fields": {
                        "reason": reason,
                        "old_version": old_version,
                        "new_version": new.version,
                        "users": len(new.users),
                        "routes": len(new.routes),
                    }
                },
            )
            for warning in new.warnings:
                logger.warning("config warning", extra={"fields": {"issue": str(warning)}})
            if new.restart_needed:
                logger.warning(
                    "config reloaded, but these settings keep their running values until a restart",
                    extra={"fields": {"keys": list(new.restart_needed)}},
                )
            return "ok"

    def _unchanged(self, reason: str, quiet: bool) -> ReloadResult:
        # Also the way back from an invalid edit to the running content: the error is gone.
        self.target.config_error = None
        self.target.metrics.config_file_invalid.set(0)
        if not quiet:
            self.target.metrics.config_reloads.labels("unchanged").inc()
            logger.info("config unchanged", extra={"fields": {"reason": reason, "version": self.target.config.version}})
        return "unchanged"

    def _invalid(self, reason: str, old: Config, exc: ConfigError) -> ReloadResult:
        self.target.config_error = exc
        self.target.metrics.config_reloads.labels("invalid").inc()
        self.target.metrics.config_file_invalid.set(1)
        for issue in exc.issues:
            logger.error("config error", extra={"fields": {"issue": str(issue)}})
        for warning in exc.warnings:
            logger.warning("config warning", extra={"fields": {"issue": str(warning)}})
        logger.error(
            "config reload refused; the running config stays",
            extra={"fields": {"reason": reason, "file": self.path, "errors": len(exc.issues), "version": old.version}},
        )
        return "invalid"

    def _install_sighup(self) -> Callable[[], None]:
        """SIGHUP -> `trigger`; returns the undo. A no-op off the main thread or where there is no SIGHUP."""
        sighup = getattr(signal, "SIGHUP", None)
        if sighup is None or threading.current_thread() is not threading.main_thread():
            return lambda: None
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(sighup)
        try:
            loop.add_signal_handler(sighup, self.trigger)
        except (NotImplementedError, RuntimeError, ValueError):
            return lambda: None

        def remove() -> None:
            loop.remove_signal_handler(sighup)
            if previous is not None:
                signal.signal(sighup, previous)

        return remove

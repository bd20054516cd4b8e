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
import functools
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Literal, Protocol, cast

from proxy.config import Agency, Config, ConfigError, ConfigIssue, load_deployment, parse_config, read_config_text
from proxy.config.files import current_version, expand_includes
from proxy.metrics import Metrics

__all__ = ["ConfigWatcher", "Reloadable", "fingerprint", "release_memory", "watched_fingerprint"]

logger = logging.getLogger(__name__)

ReloadResult = Literal["ok", "unchanged", "invalid"]
Fingerprint = tuple[object, ...]

# A changed file must look the same twice this far apart before it is read: a save in progress is
# then read once finished rather than half-written (which would count as an invalid reload).
SETTLE_SECONDS = 0.05
LOADING_SWITCH_SECONDS = 0.0005

NO_AUTH = "no Vapi authentication configured (vapi_secrets, bearer or hmac); refusing to serve it"


class Reloadable(Protocol):
    """What the watcher reloads: `proxy.runtime.Runtime`."""

    config: Config
    config_error: ConfigError | None
    metrics: Metrics
    insecure: bool

    def apply(self, config: Config) -> None: ...


class ReloadableAgency(Protocol):
    """What the watcher reloads in agency mode: `proxy.runtime.Tenants`."""

    config: Agency
    config_error: ConfigError | None
    metrics: Metrics
    insecure: bool

    async def apply(self, agency: Agency) -> None: ...


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
        _libc().malloc_trim(0)


@contextlib.contextmanager
def _loop_first() -> Iterator[None]:
    """While a reload parses in its thread, the interpreter switches threads every LOADING_SWITCH_SECONDS
    instead of every 5 ms: the event loop, back from waiting on its sockets, then waits at most that long
    for the parsing thread to let go, not 5 ms each time (the convoy effect that cut warm throughput to
    about a third while a 100k-user file reloaded)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, LOADING_SWITCH_SECONDS))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@functools.cache
def _libc() -> ctypes.CDLL:
    # Looked up once, at start-up's trim: find_library runs ldconfig, which held a reload's event loop 60 ms.
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def watched_fingerprint(config: Config | Agency) -> Fingerprint:
    """What changes when the main file, an included file, or the set of files an include matches does;
    for an agency file, also each tenant's file and the files it includes."""
    if isinstance(config, Agency):
        files = [config.file, *(source.file for source in config.sources.values() if source.file is not None)]
        return (
            tuple((name, fingerprint(name)) for name in files),
            *(watched_fingerprint(tenant) for tenant in config.tenants.values() if tenant.include_patterns),
        )
    names = (config.files[0], *expand_includes(config.files[0], config.include_patterns)) if config.files else ()
    return tuple((name, fingerprint(name)) for name in names)


class ConfigWatcher:
    """Reloads `path` into `target` when the file changes (every `server.reload_poll_seconds`, 0 = off)
    and on SIGHUP, from `start()` until its task is cancelled."""

    def __init__(self, path: str, target: Reloadable | ReloadableAgency) -> None:
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
            if isinstance(self.target.config, Agency):
                return await self._reload_agency(reason, quiet)
            target = self.target
            old = target.config
            self._seen = watched_fingerprint(old)
            try:
                if await asyncio.to_thread(current_version, old) == old.version:
                    return self._unchanged(reason, quiet)
                text = await asyncio.to_thread(read_config_text, self.path)
                with _loop_first():
                    new = await asyncio.to_thread(parse_config, text, self.path, os.environ, running=old)
                if not new.auth.configured and not self.target.insecure:
                    # `serve` refuses to start like this; served, it would answer every call 401.
                    raise ConfigError([ConfigIssue(self.path, None, ("auth",), NO_AUTH)])
                if new.version == old.version:
                    return self._unchanged(reason, quiet)
                target.apply(new)
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

    async def _reload_agency(self, reason: str, quiet: bool) -> ReloadResult:
        """An agency file: tenant by tenant. An invalid tenant keeps its running config (or, new, does not
        start) while the others are applied; only an invalid agency file itself keeps everything."""
        target = cast(ReloadableAgency, self.target)
        old = target.config
        self._seen = watched_fingerprint(old)
        try:
            with _loop_first():
                new = await asyncio.to_thread(load_deployment, self.path, os.environ, running=old)
            if not isinstance(new, Agency):
                message = "no longer holds tenants: serving it as one business needs a restart"
                raise ConfigError([ConfigIssue(self.path, None, ("tenants",), message)])
        except ConfigError as exc:
            return self._invalid(reason, old, exc)
        except Exception as exc:  # as for one config: the running tenants stay
            logger.exception("config reload failed")
            issue = ConfigIssue(self.path, None, (), f"could not be applied ({type(exc).__name__})")
            return self._invalid(reason, old, ConfigError([issue]))
        if not target.insecure:
            new = new.without_unauthenticated(NO_AUTH)
        same = new.tenants.keys() == old.tenants.keys() and all(new.tenants[t] is c for t, c in old.tenants.items())
        await target.apply(new)
        self._seen = watched_fingerprint(new)
        target.config_error = None
        for tenant, error in sorted(new.errors.items()):
            for issue in error.issues:
                logger.error("config error", extra={"fields": {"tenant": tenant, "issue": str(issue)}})
        if same and not new.errors:
            return self._unchanged(reason, quiet)
        result: ReloadResult = "invalid" if new.errors else "ok"
        target.metrics.config_reloads.labels(result).inc()
        target.metrics.config_file_invalid.set(1 if new.errors else 0)
        fields = {
            "reason": reason,
            "tenants": len(new.tenants),
            "started": sorted(new.tenants.keys() - old.tenants.keys()),
            "stopped": sorted(old.sources.keys() - new.sources.keys()),
            "invalid": sorted(new.errors),
        }
        logger.info("config reloaded", extra={"fields": fields})
        if new.restart_needed:
            logger.warning(
                "config reloaded, but these settings keep their running values until a restart",
                extra={"fields": {"keys": list(new.restart_needed)}},
            )
        del old
        await asyncio.to_thread(release_memory)
        return result

    def _unchanged(self, reason: str, quiet: bool) -> ReloadResult:
        # Also the way back from an invalid edit to the running content: the error is gone.
        self.target.config_error = None
        self.target.metrics.config_file_invalid.set(0)
        if not quiet:
            self.target.metrics.config_reloads.labels("unchanged").inc()
            logger.info("config unchanged", extra={"fields": {"reason": reason, "version": self.target.config.version}})
        return "unchanged"

    def _invalid(self, reason: str, old: Config | Agency, exc: ConfigError) -> ReloadResult:
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

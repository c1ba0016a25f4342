"""Configuration reload without downtime, and a broken new configuration refused.

``kill -HUP`` of the collector (``systemctl reload pixelrelay-collector``) reaches granian's main
process, which passes it on to every worker (``collector._granian``) instead of replacing them:
each worker reads the file again and swaps its links, pixels and API keys in place
(``reload_in_place``). No socket closes and no worker stops, so no request is refused or cut
off: each one is answered by the configuration before the reload or the one after it. (granian's
own reload starts new workers and stops the old ones 3.5 s later; on a busy machine the new ones
were not listening yet, and connections were refused: docs/reliability.md.)

A broken file is refused: the worker logs ``config_reload_refused`` with the reason and keeps
serving what it has. The same holds for a worker that starts later (respawned after a crash): it
keeps a copy of the last configuration that loaded (a private file ``pixelrelay collector``
creates, named by ``$PIXELRELAY_CONFIG_LAST_GOOD``) and starts on that copy.

What is built into long-lived objects at start (``RESTART_ONLY``: the listening socket, the
Redis client, the spool, CORS) keeps its old value until a restart; a reload that changes it
says so in ``config_reload_needs_restart``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import structlog

from relay.config import CONFIG_ENV, Settings, load_settings
from relay.errors import ConfigError

if TYPE_CHECKING:
    from collector.context import CollectorContext

LAST_GOOD_ENV = "PIXELRELAY_CONFIG_LAST_GOOD"
log = structlog.get_logger("collector.reload")


def keep_last_good(config: str | os.PathLike[str]) -> Path:
    """Validate ``config`` and keep a private copy of it; its path (for ``LAST_GOOD_ENV``).

    Raises ``ConfigError`` if it does not load: at start there is nothing to fall back to.
    """
    handle, name = tempfile.mkstemp(prefix="pixelrelay-config-", suffix=".toml")
    with os.fdopen(handle, "wb") as copy:
        copy.write(Path(config).read_bytes())
    try:
        load_settings(name)
    except ConfigError:
        os.unlink(name)
        raise
    return Path(name)


def load_worker_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    """This worker's settings: the file if it loads (it becomes the last good one), else the
    last good copy, with the refusal logged."""
    last_good = environ.get(LAST_GOOD_ENV)
    if not last_good:
        return load_settings(environ=environ)
    config = Path(environ.get(CONFIG_ENV, ""))
    candidate = Path(f"{last_good}.{os.getpid()}")
    try:
        candidate.write_bytes(config.read_bytes())  # read once: what is checked is what is kept
        settings = load_settings(candidate, environ)
    except (ConfigError, OSError) as exc:
        candidate.unlink(missing_ok=True)
        log.error("config_reload_refused", reason=str(exc), config=str(config),
                  kept="the last configuration that loaded")
        settings = load_settings(last_good, environ)
    else:
        os.replace(candidate, last_good)
    return msgspec.structs.replace(settings, source=str(config))


# Collector settings read once into objects that live as long as the worker.
RESTART_ONLY = ("host", "port", "workers", "spool_dir", "max_body_bytes", "redis_timeout_ms",
                "redis_probe_interval_ms", "allowed_origins", "shutdown_grace_s")


def applicable(current: Settings, new: Settings) -> tuple[Settings, list[str]]:
    """``new`` with what only a restart can change kept as in ``current``, and the names of the
    settings that differ there."""
    kept = {name: getattr(current.collector, name) for name in RESTART_ONLY}
    differ = [f"collector.{name}" for name, value in kept.items()
              if getattr(new.collector, name) != value]
    if new.redis != current.redis:
        differ.append("redis")
    if new.relay.ledger_ttl_days != current.relay.ledger_ttl_days:
        differ.append("relay.ledger_ttl_days")
    replace = msgspec.structs.replace
    return replace(new, collector=replace(new.collector, **kept), redis=current.redis,
                   relay=replace(new.relay, ledger_ttl_days=current.relay.ledger_ttl_days)), differ


def reload_in_place(ctx: CollectorContext, environ: Mapping[str, str] = os.environ) -> None:
    """Read the configuration file again and serve it from the next request (a broken file:
    the last good one, with the refusal logged by ``load_worker_settings``)."""
    settings, differ = applicable(ctx.settings, load_worker_settings(environ))
    ctx.reconfigure(settings)
    log.info("config_reloaded", pid=os.getpid(), links=len(settings.links),
             pixels=len(settings.pixels), api_keys=len(settings.api_keys))
    if differ:
        log.warning("config_reload_needs_restart", settings=differ,
                    kept="the values the collector started with")


class ReloadSignal:
    """SIGHUP in a worker: ``reload_in_place`` on the worker's event loop.

    ``expect`` runs before the worker first reads the file, so a SIGHUP that arrives before the
    loop runs is not lost (and does not end the worker): it is remembered and served by
    ``attach``.
    """

    def __init__(self) -> None:
        self.pending = False

    def expect(self) -> None:
        signal.signal(signal.SIGHUP, self._remember)

    def _remember(self, signum: int, frame: object) -> None:
        self.pending = True

    def attach(self, loop: asyncio.AbstractEventLoop, ctx: CollectorContext,
               environ: Mapping[str, str] = os.environ) -> None:
        loop.add_signal_handler(signal.SIGHUP, reload_in_place, ctx, environ)
        if self.pending:
            self.pending = False
            reload_in_place(ctx, environ)

"""Configuration reload without downtime, and a broken new configuration refused.

``kill -HUP`` of the collector (``systemctl reload pixelrelay-collector``) has granian start new
workers, which read the configuration file as it is now, and stop the old ones once the new
ones serve: links, pixels and API keys change without a dropped request. A new worker whose
file is broken would exit at once, and granian, taking that for a crash loop, would stop the
whole collector. So each worker keeps a copy of the last configuration that loaded (a private
file ``pixelrelay collector`` creates, named by ``$PIXELRELAY_CONFIG_LAST_GOOD``) and, when the
file is broken, logs ``config_reload_refused`` with the reason and starts on that copy instead.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import msgspec
import structlog

from relay.config import CONFIG_ENV, Settings, load_settings
from relay.errors import ConfigError

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

"""Serve the fake Graph API with granian: one worker, logs on stderr, clean exit on a signal.

``run(options)`` is what ``python -m fakemeta`` and ``pixelrelay fake-meta`` call. The options
reach the worker inside the app loader itself (pickled if granian spawns rather than forks),
so nothing is smuggled through the environment.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any

import structlog
from granian import Granian
from granian.constants import Interfaces

from fakemeta._options import FakeMetaOptions
from fakemeta.app import create_app

# granian's own logs (start-up, shutdown) go to stderr: stdout stays free for the caller.
_GRANIAN_LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"generic": {"format": "[%(levelname)s] %(message)s"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "generic",
            "stream": "ext://sys.stderr",
        }
    },
    "loggers": {
        "_granian": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "granian.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}


def run(options: FakeMetaOptions | None = None) -> None:
    """Serve the fake until SIGINT or SIGTERM; ``None`` reads ``FAKEMETA_*`` variables."""
    options = options if options is not None else FakeMetaOptions.from_env()
    server = Granian(
        "fakemeta.app:create_app",
        address=options.host,
        port=options.port,
        interface=Interfaces.ASGI,
        workers=1,
        log_dictconfig=_GRANIAN_LOGGING,
    )
    server.serve(target_loader=functools.partial(_load_app, options), wrap_loader=False)


def main() -> int:
    """Entry point of ``python -m fakemeta``: exit status 2 on bad configuration."""
    try:
        options = FakeMetaOptions.from_env()
    except ValueError as exc:
        print(f"fakemeta: {exc}", file=sys.stderr)
        return 2
    run(options)
    return 0


def _load_app(options: FakeMetaOptions) -> Any:
    """Build the app inside the granian worker."""
    _configure_logging()
    return create_app(options)


def _configure_logging() -> None:
    # Whoever embeds the fake (e.g. the pixelrelay CLI) may have set up structlog already.
    if structlog.is_configured():
        return
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"]),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )

"""Structured logging: one JSON object per line on stdout, configured once per process.

Events carry ``event_id``, ``pixel_id``, ``attempt``, ``latency_ms`` where they have them. Tokens
and raw personal data are never passed to a logger; ``redact`` strips any ``access_token`` query
parameter from URLs that have to be logged.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

import structlog

_TOKEN = re.compile(r"(access_token|appsecret_proof)=[^&\s]+")


def redact(text: str) -> str:
    return _TOKEN.sub(r"\1=[redacted]", text)


def configure_logging(process: str, level: str = "INFO", json: bool = True) -> None:
    logging.basicConfig(format="%(message)s", stream=sys.stdout, level=level)
    # httpx logs every request URL at INFO, and Graph API URLs carry the access token.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            _add_process(process),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )


def _add_process(name: str) -> structlog.typing.Processor:
    def add(_: object, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("process", name)
        return event

    return add


class JsonLineFormatter(logging.Formatter):
    """For loggers outside structlog (granian's own): the same one-JSON-object-per-line shape."""

    def __init__(self, process: str = "", **_: Any) -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "event": record.getMessage(),
            "level": record.levelname.lower(),
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
            "process": self._process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry))


def granian_log_config(process: str) -> dict[str, Any]:
    """A ``--log-config`` for granian: its lines in JSON like ours."""
    formatter = {"()": "relay.logs.JsonLineFormatter", "process": process}
    return {"formatters": {"generic": formatter, "access": formatter}}

"""The project's one error tree. Foreign errors are translated into it at the boundaries.

    PixelRelayError
    ├── ConfigError          bad configuration; raised at start-up with one sentence
    ├── InputError           bad client input; carries the HTTP status (4xx) and a sentence
    ├── StorageError         an event could not be stored durably (Redis and spool failed)
    └── DeliveryError        a batch did not reach Meta
        ├── TransientError   retry with backoff (transport, timeout, 5xx, codes 1, 2, 341, 368)
        │   └── ThrottledError   slow the pixel down, then retry (codes 4, 17, 32, 613, 80004)
        └── PermanentError   dead letter at once (100s about the request, the rest), except
                             190 (token) and 10/200-299 (permission): the pixel pauses
"""

from __future__ import annotations

from typing import Any


class PixelRelayError(Exception):
    """Base of every error pixelrelay raises on purpose."""


class ConfigError(PixelRelayError):
    """The configuration is unusable; the message names the key."""


class InputError(PixelRelayError):
    """A client sent something we refuse; ``status`` is the 4xx to answer with."""

    def __init__(self, message: str, status: int = 400, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        """Which rule refused it, when a boundary answers per rule (the Graph endpoint maps
        ``event_too_old``, ``bad_fbc``, ``malformed_user_data`` to Meta's subcodes)."""


class StorageError(PixelRelayError):
    """Neither Redis nor the disk spool took the event: the client must retry."""


class DeliveryError(PixelRelayError):
    """A batch was not accepted by Meta. Carries Meta's error fields when there were any."""

    def __init__(self, message: str, *, code: int | None = None, subcode: int | None = None,
                 fbtrace_id: str | None = None, status: int | None = None,
                 retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.subcode = subcode
        self.fbtrace_id = fbtrace_id
        self.status = status
        self.retry_after_ms = retry_after_ms

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": type(self).__name__,
            "message": self.message,
            "code": self.code,
            "subcode": self.subcode,
            "fbtrace_id": self.fbtrace_id,
            "status": self.status,
        }


class TransientError(DeliveryError):
    """Worth retrying later."""


class ThrottledError(TransientError):
    """Meta asks us to slow down for this pixel."""


class PermanentError(DeliveryError):
    """Retrying cannot help: dead-letter with Meta's reason."""


class InvalidBatchError(PermanentError):
    """Meta blamed an event (code 100, subcode 2804xxx or a data[n] index): split to find it."""

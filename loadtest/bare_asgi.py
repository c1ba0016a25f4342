"""The Python ceiling for ``make bench``: an ASGI app on granian that answers every request with
a 302 and nothing else (no routing, no cookies, no Redis)."""

from __future__ import annotations

from typing import Any

_START = {"type": "http.response.start", "status": 302,
          "headers": [(b"location", b"https://example.com/"), (b"content-length", b"0")]}
_BODY = {"type": "http.response.body", "body": b""}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return  # lifespan: nothing to start
    await send(_START)
    await send(_BODY)

"""A plain Litestar ``Response`` sent as its two ASGI messages directly, for the redirect path.

``Response.to_asgi_response`` builds an ``ASGIResponse`` (a header container, a setdefault per
header, the cookies encoded) for every request: about a fifth of a redirect's CPU in front of
Litestar (docs/performance.md). ``response_messages`` writes the same two messages, byte for
byte (``tests/collector/test_asgi.py`` compares them), for the responses the redirect gives:
bytes content, no background task, a status that has a body. Anything else returns None and
goes through Litestar as before.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from litestar import Response
from litestar.enums import MediaType

Messages = tuple[dict[str, Any], dict[str, Any]]
_NO_BODY_STATUSES = frozenset({204, 304})


@lru_cache(maxsize=16)
def _content_type(media_type: str, encoding: str) -> bytes:
    value = f"{media_type}; charset={encoding}" if media_type.startswith("text/") else media_type
    return value.encode("latin-1")


def response_messages(response: Response[Any]) -> Messages | None:
    """The ``http.response.start`` and ``http.response.body`` messages Litestar would send for
    ``response`` (not as a HEAD answer), or None when it is not one of the simple ones."""
    content = response.content
    status = response.status_code or 200
    if (type(response) is not Response or response.background is not None
            or not isinstance(content, bytes) or status in _NO_BODY_STATUSES or status < 200):
        return None
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1"))
               for name, value in response.headers.items()]
    names = {name for name, _ in headers}
    if b"content-type" not in names:
        media_type = response.media_type or MediaType.JSON
        headers.append((b"content-type", _content_type(
            media_type.value if isinstance(media_type, MediaType) else media_type,
            response.encoding)))
    if b"content-length" not in names:
        headers.append((b"content-length", str(len(content)).encode("latin-1")))
    headers += [cookie.to_encoded_header() for cookie in response.cookies
                if not cookie.documentation_only]
    return ({"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": content, "more_body": False})

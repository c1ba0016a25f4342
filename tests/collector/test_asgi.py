"""collector.asgi.response_messages: the same two ASGI messages Litestar sends for a response."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Request, Response
from litestar.background_tasks import BackgroundTask

from collector.asgi import response_messages
from collector.cookies import PlainCookie
from collector.redirect import NOT_FOUND_PAGE


async def litestar_messages(response: Response[Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope: Any = {"type": "http", "method": "GET", "path": "/go/demo", "headers": [],
                  "query_string": b"", "state": {}}
    request: Request[Any, Any, Any] = Request(scope, receive)
    await response.to_asgi_response(app=None, request=request)(scope, receive, send)
    return sent


def redirect() -> Response[Any]:
    cookies = [PlainCookie(key="_prclk", value="abc", max_age=7_776_000, path="/",
                           samesite="lax", secure=True, httponly=False),
               PlainCookie(key="_fbc", value="fb.1.1700000000000.x", max_age=7_776_000,
                           path="/", domain="example.com", samesite="lax")]
    return Response(b"", status_code=302, media_type="text/plain", cookies=cookies,
                    headers={"Location": "https://shop.example/?cid=abc",
                             "Cache-Control": "no-store",
                             "Referrer-Policy": "no-referrer-when-downgrade"})


RESPONSES = {
    "redirect with cookies": redirect,
    "bot redirect": lambda: Response(b"", status_code=302, media_type="text/plain",
                                     headers={"Location": "https://shop.example/"}),
    "404 page": lambda: Response(NOT_FOUND_PAGE.encode(), status_code=404,
                                 media_type="text/html"),
    "503 JSON": lambda: Response(b'{"error":"x"}', status_code=503,
                                 media_type="application/json", headers={"Retry-After": "1"}),
    "own content-length": lambda: Response(b"abc", status_code=200, media_type="text/plain",
                                           headers={"Content-Length": "3"}),
}


@pytest.mark.parametrize("name", RESPONSES)
async def test_the_messages_are_litestars(name: str) -> None:
    messages = response_messages(RESPONSES[name]())

    assert messages is not None
    assert await litestar_messages(RESPONSES[name]()) == list(messages)


@pytest.mark.parametrize("response", [
    Response("text", status_code=200),
    Response(b"", status_code=204),
    Response(b"", status_code=302, background=BackgroundTask(print)),
], ids=["str content", "204", "background task"])
def test_anything_else_is_left_to_litestar(response: Response[Any]) -> None:
    assert response_messages(response) is None

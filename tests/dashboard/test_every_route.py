"""Every route the dashboard app has, found by walking its routes rather than listed by hand
(so a route added later is covered the day it lands): none answers without a session, and
none that changes something answers without a CSRF token."""

from __future__ import annotations

import re

import httpx
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from dashboard.app import PUBLIC_PATHS

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def routes(client: AsyncTestClient) -> list[tuple[str, str]]:
    """(method, path with every parameter filled) for each handler of the app."""
    found = []
    for route in client.app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        path = re.sub(r"\{[^}]+\}", "x", route.path)
        if path in PUBLIC_PATHS or path.startswith("/static"):
            continue
        found += [(method, path) for method in sorted(route.methods - {"OPTIONS", "HEAD"})]
    return found


async def test_the_walk_finds_the_routes_that_matter(anonymous: AsyncTestClient) -> None:
    found = routes(anonymous)

    assert {("GET", "/"), ("GET", "/dead-letters"), ("POST", "/dead-letters/act")} <= set(found)


async def test_no_route_answers_without_a_session(anonymous: AsyncTestClient) -> None:
    answers = {f"{m} {p}": await anonymous.request(m, p, follow_redirects=False)
               for m, p in routes(anonymous)}

    def refused(answer: httpx.Response) -> bool:
        if answer.status_code == 303:
            return answer.headers["location"].startswith("/login")
        return answer.status_code in (401, 403)

    assert {r: True for r in answers} == {r: refused(a) for r, a in answers.items()}, {
        r: a.status_code for r, a in answers.items()}


async def test_no_route_that_changes_something_answers_without_a_csrf_token(
        operator: AsyncTestClient) -> None:
    unsafe = [(m, p) for m, p in routes(operator) if m not in SAFE_METHODS]

    answers = {f"{m} {p}": (await operator.request(m, p, data={"action": "requeue",
                                                                "scope": "all"})).status_code
               for m, p in unsafe}

    assert unsafe
    assert {r: 403 for r in answers} == answers

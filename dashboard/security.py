"""Who may see and do what: sessions, login throttling, roles, security headers.

- Sessions are server-side in Redis (Litestar's ``ServerSideSessionConfig`` + ``RedisStore``):
  the cookie holds only a random id, is HttpOnly and SameSite=Lax, and Secure when the request
  came over TLS. A session ends after ``session_idle_timeout_s`` unused (the store's expiry,
  renewed on each request) or ``session_max_age_s`` after its login (checked here), or at logout.
  A login always starts a new session id (no fixation).
- CSRF: Litestar's double-submit token on every POST (forms carry ``_csrf_token``, htmx sends
  the ``x-csrftoken`` header set on ``<body>``). Its secret is made once and kept in Redis, so
  every dashboard process and restart agrees on it.
- Failed logins are counted per name and per address; past ``login_free_failures`` each further
  try waits 1 s, 2 s, 4 s ... up to ``login_max_delay_s`` after the last failure (a 429).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.datastructures import MutableScopeHeaders
from litestar.middleware.session.server_side import (
    ServerSideSessionBackend,
    ServerSideSessionConfig,
)
from litestar.types import ASGIApp, Empty, Message, Receive, Scope, Send
from redis import Redis

from relay import keys
from relay.config import DashboardSettings

NEW_SESSION_ID = "pixelrelay.new_session_id"
SESSION_COOKIE = "pixelrelay_session"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


class _RotatingBackend(ServerSideSessionBackend):
    """Litestar's backend, but a login can ask for a brand-new session id."""

    def get_session_id(self, connection: ASGIConnection[Any, Any, Any, Any]) -> str:
        fresh = connection.scope.get(NEW_SESSION_ID)
        if fresh:
            return str(fresh)
        return super().get_session_id(connection)

    async def store_in_message(self, scope_session: Any, message: Message,
                               connection: ASGIConnection[Any, Any, Any, Any]) -> None:
        """No Redis key for a visitor without a session; a login drops the session it had."""
        old = connection.cookies.get(self.config.key)
        if scope_session is not Empty and not scope_session:
            if not old:
                return
            scope_session = Empty
        if old and connection.scope.get(NEW_SESSION_ID):
            await self.delete(old, store=self.config.get_store_from_app(connection.scope["app"]))
        await super().store_in_message(scope_session, message, connection)


class SessionConfig(ServerSideSessionConfig):
    _backend_class = _RotatingBackend


def session_config(settings: DashboardSettings) -> SessionConfig:
    return SessionConfig(key=SESSION_COOKIE, max_age=settings.session_idle_timeout_s,
                         renew_on_access=True, httponly=True, samesite="lax", secure=False,
                         store="sessions")


def start_session(scope: Scope) -> None:
    """Make the response carry a new session id (call at login, before filling the session)."""
    scope[NEW_SESSION_ID] = secrets.token_hex(32)  # type: ignore[literal-required]


def csrf_secret(client: Redis) -> str:
    """The CSRF signing secret shared by every dashboard process (made by the first one)."""
    client.set(keys.dashboard_secret(), secrets.token_hex(32), nx=True)
    value = client.get(keys.dashboard_secret())
    return value.decode() if isinstance(value, bytes) else str(value)


def session_expired(session: dict[str, Any], settings: DashboardSettings,
                    now_s: float | None = None) -> bool:
    now = time.time() if now_s is None else now_s
    return now - float(session.get("login_at", 0)) > settings.session_max_age_s


def came_over_tls(scope: Scope) -> bool:
    """The request was HTTPS: directly, or through a proxy on this host that says so."""
    if scope.get("scheme") == "https":
        return True
    client = scope.get("client")
    if client and client[0] in ("127.0.0.1", "::1"):
        for name, value in scope.get("headers", []):
            if name == b"x-forwarded-proto":
                return value.strip().lower() == b"https"
    return False


class HeadersMiddleware:
    """Security headers on every answer; cookies marked Secure when the request used TLS."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tls = came_over_tls(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                headers["content-security-policy"] = CSP
                headers["x-content-type-options"] = "nosniff"
                headers["x-frame-options"] = "DENY"
                headers["referrer-policy"] = "same-origin"
                headers.setdefault("cache-control", "no-store")
                if tls:
                    cookies = headers.getall("set-cookie", [])
                    if cookies:
                        del headers["set-cookie"]
                        for cookie in cookies:
                            headers.add("set-cookie", cookie if "secure" in cookie.lower()
                                        else f"{cookie}; Secure")
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- login throttling ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Throttle:
    client: Redis
    free_failures: int
    max_delay_s: int
    window_s: int = 86_400  # failures are forgotten a day after the last one

    def wait_s(self, name: str, address: str, now_ms: int | None = None) -> int:
        """Seconds until ``name`` may try again from ``address``; 0 = now."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        pipe = self.client.pipeline(transaction=False)
        for key in self._keys(name, address):
            pipe.hmget(key, "count", "last_ms")
        waits = [0]
        for count, last in pipe.execute():
            if count is None:
                continue
            extra = int(count) - self.free_failures
            if extra < 0:
                continue
            delay_ms = min(self.max_delay_s, 2 ** min(extra, 30)) * 1000
            waits.append(max(0, -(-(int(last) + delay_ms - now) // 1000)))
        return max(waits)

    def failed(self, name: str, address: str, now_ms: int | None = None) -> None:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        pipe = self.client.pipeline(transaction=False)
        for key in self._keys(name, address):
            pipe.hincrby(key, "count", 1)
            pipe.hset(key, "last_ms", now)
            pipe.expire(key, self.window_s)
        pipe.execute()

    def succeeded(self, name: str, address: str) -> None:
        self.client.delete(*self._keys(name, address))

    @staticmethod
    def _keys(name: str, address: str) -> list[str]:
        return [keys.login_failures("name", name.lower()[:64]),
                keys.login_failures("addr", address)]

"""The operators' dashboard: Litestar + Jinja2 + htmx, server-rendered, no build step.

granian serves ``dashboard.app:create_app`` as a factory; settings from ``$PIXELRELAY_CONFIG``.
Every page needs a session (``dashboard.security``); handlers are synchronous and run in
Litestar's thread pool, so they call the same ``relay`` functions the CLI does (trace, requeue,
the ledger readers) with a synchronous Redis client.

Routes: ``/`` overview (live fragment ``/fragments/overview``), ``/dead-letters`` (+ detail,
requeue, discard, bulk jobs), ``/find``, ``/links``, ``/pixels``, ``/audit``, ``/login``,
``/logout``, ``/healthz``, ``/static/*``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from litestar import Litestar, Request, get
from litestar.config.csrf import CSRFConfig
from litestar.exceptions import HTTPException, NotFoundException
from litestar.middleware import DefineMiddleware
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Response, Template
from litestar.static_files import create_static_files_router
from litestar.stores.redis import RedisStore
from litestar.template.config import TemplateConfig
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from dashboard import pages, rescue
from dashboard.app_support import local_path
from dashboard.context import Context
from dashboard.formatting import install_filters
from dashboard.security import (
    HeadersMiddleware,
    csrf_secret,
    session_config,
    session_expired,
)
from relay import keys
from relay.config import Settings, load_settings
from relay.logs import configure_logging
from relay.stats import roll_up_past_hours

ROOT = Path(__file__).parent
TEMPLATES = ROOT / "templates"
STATIC = ROOT / "static"
PUBLIC_PATHS = frozenset({"/login", "/healthz"})
ROLLUP_INTERVAL_S = 60.0


async def _require_session(request: Request[Any, Any, Any]) -> Response[Any] | None:
    """Every route but the login, the health check and static files needs a live session.

    A page gets a redirect to the login; an htmx fragment a 401 whose ``HX-Redirect`` makes
    the whole page go there (never a login form swapped into a table)."""
    path = request.url.path
    if path in PUBLIC_PATHS or path.startswith("/static/"):
        return None
    ctx: Context = request.app.state.ctx
    session = request.session if "session" in request.scope else {}
    operator = ctx.settings.operator(str(session.get("operator", ""))) if session else None
    if operator is not None and not session_expired(session, ctx.settings.dashboard):
        request.scope["operator"] = operator  # type: ignore[typeddict-unknown-key]
        return None
    if session:
        request.clear_session()
    back = path + (f"?{request.url.query}" if request.url.query else "")
    if request.headers.get("hx-request") == "true":
        current = urlsplit(request.headers.get("hx-current-url", "/"))
        current_path = current.path + (f"?{current.query}" if current.query else "")
        return Response("Your session has ended: log in again.", status_code=401,
                        media_type="text/plain",
                        headers={"HX-Redirect": f"/login?next={quote(local_path(current_path))}"})
    return Redirect(f"/login?next={quote(back)}", status_code=303)


def _error_page(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """One handler for every client error: a sentence, as a page or as a fragment."""
    status = exc.status_code
    detail = exc.detail if status < 500 else "Something went wrong on our side."
    if status == 403 and "CSRF" in str(exc.detail):
        detail = ("This form expired or did not come from the dashboard (CSRF check failed): "
                  "reload the page and try again.")
    if request.headers.get("hx-request") == "true":
        return Response(detail, status_code=status, media_type="text/plain")
    return Template("error.html", context={"status": status, "detail": detail,
                                           "operator": request.scope.get("operator")},
                    status_code=status)


def _not_found(request: Request[Any, Any, Any], exc: NotFoundException) -> Response[Any]:
    return _error_page(request, HTTPException(status_code=404, detail="There is no such page."))


def build_app(settings: Settings, redis: Redis | None = None,
              async_redis: AsyncRedis | None = None, background: bool = True) -> Litestar:
    client = redis or Redis.from_url(settings.redis_url, socket_timeout=5,
                                     max_connections=64)
    aclient = async_redis or AsyncRedis.from_url(settings.redis_url, socket_timeout=5)
    ctx = Context(settings, client)
    stop = threading.Event()

    def roll_up_loop() -> None:
        while not stop.wait(ROLLUP_INTERVAL_S):
            with contextlib.suppress(Exception):  # retried in a minute
                roll_up_past_hours(client)

    def on_startup() -> None:
        if background:
            threading.Thread(target=roll_up_loop, name="rollup", daemon=True).start()

    def on_shutdown() -> None:
        stop.set()
        ctx.jobs.shutdown()

    @get("/healthz", sync_to_thread=False)
    def healthz() -> dict[str, str]:
        return {"status": "alive"}

    engine_config = TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine,
                                   engine_callback=install_filters)
    app = Litestar(
        route_handlers=[healthz, *pages.handlers, *rescue.handlers,
                        create_static_files_router(path="/static", directories=[STATIC],
                                                   include_in_schema=False)],
        template_config=engine_config,
        csrf_config=CSRFConfig(secret=csrf_secret(client), cookie_httponly=True,
                               cookie_samesite="strict"),
        middleware=[DefineMiddleware(HeadersMiddleware), session_config(
            settings.dashboard).middleware],
        stores={"sessions": RedisStore(aclient, namespace=keys.dashboard_sessions(),
                                       handle_client_shutdown=async_redis is None)},
        before_request=_require_session,
        exception_handlers={NotFoundException: _not_found, HTTPException: _error_page},
        on_startup=[on_startup],
        on_shutdown=[on_shutdown],
        openapi_config=None,
    )
    app.state.ctx = ctx
    return app


def create_app() -> Litestar:
    configure_logging("dashboard", os.environ.get("PIXELRELAY_LOG_LEVEL", "INFO"))
    return build_app(load_settings())

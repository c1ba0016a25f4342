"""The collector's ASGI app: Litestar routes around one ``CollectorContext``, with the redirect
answered in front of Litestar.

granian serves ``collector.app:create_app`` as a factory; the settings come from
``$PIXELRELAY_CONFIG``, read by each worker at start and again on SIGHUP (collector/reload.py).
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources

import msgspec
import structlog
from litestar import Litestar, Request, Response, get, post, route
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.enums import HttpMethod
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.types import Receive, Scope, Send
from redis.asyncio import Redis

from collector.asgi import response_messages
from collector.context import CollectorContext, json_encode
from collector.enqueue import DurableEnqueuer
from collector.graph import GraphError, graph_error_of, handle_graph_events
from collector.ingest import handle_beacon, handle_server_events
from collector.metrics import CollectorMetrics
from collector.openapi import BeaconOperation, EventsOperation, RedirectOperation, openapi_config
from collector.redirect import handle_redirect
from collector.reload import ReloadSignal, load_worker_settings
from collector.spool import Spool
from relay import hashing, keys
from relay.breaker import pause_status_async
from relay.config import Settings
from relay.errors import InputError, StorageError
from relay.inbox import AsyncStore
from relay.logs import configure_logging

log = structlog.get_logger("collector")
SCRIPT = resources.files("collector").joinpath("static/pixelrelay.js").read_bytes()
SECONDS_PER_DAY = 86_400


def _error(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(json_encode({"error": message}), status_code=status,
                    media_type="application/json", headers=headers)


class CollectorApp:
    """``GET|HEAD /go/<slug>`` answered by ``handle_redirect`` directly; everything else, and
    every other shape of path, by Litestar.

    The redirect is the hot path, and Litestar's middleware stack, routing and parameter parsing
    were about a quarter of its CPU: 191 against 142 us per redirect, 4,900 against 6,500
    redirects/s (docs/benchmarks.md). The handler, its counters and its error answers are the
    same either way. Its response goes out as two ASGI messages written by
    ``collector.asgi.response_messages`` (Litestar's response path was a fifth of what was
    left: docs/performance.md).
    """

    def __init__(self, litestar: Litestar, ctx: CollectorContext) -> None:
        self.litestar = litestar
        self.ctx = ctx

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Litestar's start-up and shutdown (the enqueuer), for an in-process server."""
        return self.litestar.lifespan()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        slug = _redirect_slug(scope)
        if slug is None:
            await self.litestar(scope, receive, send)
            return
        request: Request = Request(scope, receive)
        try:
            response = await handle_redirect(self.ctx, request, slug)
        except StorageError as exc:
            response = storage_error_response(self.ctx, request, exc)
        messages = response_messages(response)
        if messages is None:
            await response.to_asgi_response(app=None, request=request)(scope, receive, send)
            return
        await send(messages[0])  # type: ignore[arg-type]
        await send(messages[1])  # type: ignore[arg-type]


def _redirect_slug(scope: Scope) -> str | None:
    """The slug of ``GET|HEAD /go/<slug>`` (one path segment, not empty), else None."""
    if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
        return None
    path = scope["path"]
    if not path.startswith("/go/"):
        return None
    slug = path[4:]
    return slug if slug and "/" not in slug else None


def build_app(settings: Settings, redis: Redis | None = None) -> CollectorApp:
    """The app for ``settings``; ``redis`` can be swapped (fakeredis in unit tests)."""
    ctx = build_context(settings, redis)
    litestar = Litestar(
        route_handlers=ROUTES,
        lifespan=[lifespan],
        exception_handlers={
            InputError: on_input_error,
            StorageError: on_storage_error,
            HTTPException: on_http_error,
        },
        cors_config=CORSConfig(
            allow_origins=sorted(ctx.origins), allow_methods=["POST"],
            allow_headers=["content-type"], allow_credentials=True, max_age=86_400,
        ) if ctx.origins else None,
        openapi_config=openapi_config(),
        request_max_body_size=settings.collector.max_body_bytes,
        debug=False,
        state=State({CONTEXT: ctx}),
    )
    return CollectorApp(litestar, ctx)


def build_context(settings: Settings, redis: Redis | None = None) -> CollectorContext:
    """This worker's context: its Redis client, its own spool directory and the enqueuer."""
    metrics = CollectorMetrics()
    timeout_s = settings.collector.redis_timeout_ms / 1000
    client = redis or Redis.from_url(settings.redis_url, socket_timeout=timeout_s,
                                     socket_connect_timeout=timeout_s)
    spool = Spool.claim(settings.collector.spool_dir)  # this worker's own subdirectory
    enqueuer = DurableEnqueuer(
        AsyncStore(client, settings.relay.ledger_ttl_days * SECONDS_PER_DAY), client.ping, spool,
        redis_timeout_s=timeout_s,
        probe_interval_s=settings.collector.redis_probe_interval_ms / 1000,
        observer=metrics,
    )
    return CollectorContext(settings=settings, enqueuer=enqueuer, metrics=metrics,
                            redis=client, spool=spool)


CONTEXT = "collector"
RELOADS = "reloads"  # the worker's ReloadSignal, in the app's state when granian serves it


def context_of(request: Request) -> CollectorContext:
    """The one ``CollectorContext`` every handler reads, kept in the app's state."""
    ctx: CollectorContext = request.app.state[CONTEXT]
    return ctx


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    ctx: CollectorContext = app.state[CONTEXT]
    settings = ctx.settings
    await ctx.enqueuer.start()
    counting = asyncio.create_task(ctx.withheld.run())
    reloads: ReloadSignal | None = app.state.get(RELOADS)
    if reloads is not None:
        reloads.attach(asyncio.get_running_loop(), ctx)
    log.info("collector_started", pid=os.getpid(), links=len(settings.links),
             pixels=len(settings.pixels), spooling=ctx.enqueuer.spooling)
    try:
        yield
    finally:
        counting.cancel()
        await asyncio.gather(counting, return_exceptions=True)  # its last flush
        await ctx.enqueuer.stop()  # every acknowledged write is stored before we exit
        await ctx.redis.aclose()
        log.info("collector_stopped", pid=os.getpid())


@route("/go/{slug:str}", http_method=[HttpMethod.GET, HttpMethod.HEAD],
       operation_class=RedirectOperation)
async def go(request: Request, slug: FromPath[str]) -> Response:
    return await handle_redirect(context_of(request), request, slug)


@post("/v1/events", operation_class=EventsOperation)
async def events(request: Request) -> Response:
    return await handle_server_events(context_of(request), request)


@post("/v1/beacon", operation_class=BeaconOperation)
async def beacon(request: Request) -> Response:
    return await handle_beacon(context_of(request), request)


@get("/pixelrelay.js", include_in_schema=False)
async def script() -> Response:
    return Response(SCRIPT, media_type="application/javascript",
                    headers={"Cache-Control": "public, max-age=3600"})


@get("/healthz", include_in_schema=False)
async def healthz() -> Response:
    return Response(json_encode({"status": "alive"}), media_type="application/json")


@get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> Response:
    ctx = context_of(request)
    enqueuer = ctx.enqueuer
    spool_ok = ctx.spool is not None and os.access(ctx.spool.directory, os.W_OK)
    ready = enqueuer.redis_up or spool_ok
    body = {"ready": ready, "redis": enqueuer.redis_up, "spool_writable": spool_ok,
            "spooling": enqueuer.spooling, "pixels": await _pixel_health(ctx),
            "paused": await _paused_pixels(ctx)}
    return Response(json_encode(body), status_code=200 if ready else 503,
                    media_type="application/json")


async def _pixel_health(ctx: CollectorContext) -> dict[str, object]:
    """The relay's last token/reachability check per pixel (informational: the collector
    stays ready while Meta is unhappy, events wait in Redis)."""
    pixels = ctx.settings.pixels
    if not ctx.enqueuer.redis_up or not pixels:
        return {}
    try:
        raw = await asyncio.wait_for(ctx.redis.mget([keys.pixel_health(p.id) for p in pixels]),
                                     ctx.settings.collector.redis_timeout_ms / 1000)
        return {p.id: msgspec.json.decode(r) if r else None
                for p, r in zip(pixels, raw, strict=True)}
    except Exception:  # noqa: BLE001 - health is best effort here
        return {}


async def _paused_pixels(ctx: CollectorContext) -> dict[str, object]:
    """Pixels whose delivery the relay paused (relay.breaker): why, since when, how many events
    wait. Informational like ``_pixel_health``: the events are safe in Redis meanwhile."""
    pixels = ctx.settings.pixels
    if not ctx.enqueuer.redis_up or not pixels:
        return {}
    try:
        found = await asyncio.wait_for(pause_status_async(ctx.redis, [p.id for p in pixels]),
                                       ctx.settings.collector.redis_timeout_ms / 1000)
    except Exception:  # noqa: BLE001 - readiness is best effort here
        return {}
    return {pid: status.as_dict() for pid, status in found.items() if status.paused}


@get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    return Response(context_of(request).metrics.render(),
                    media_type="text/plain; version=0.0.4")


def on_graph_error(request: Request, exc: Exception) -> Response:
    """The Graph endpoint refuses in Meta's shape, so Meta's clients read the error."""
    error = graph_error_of(exc)
    context_of(request).metrics.requests.labels("graph", str(error.status)).inc()
    return error.response({"Retry-After": "1"} if error.transient else None)


# Not in pixelrelay's OpenAPI document: its contract is Meta's Graph API (collector/graph.py).
@post("/{version:str}/{pixel_id:str}/events", status_code=200, include_in_schema=False,
      exception_handlers={
    GraphError: on_graph_error, InputError: on_graph_error, StorageError: on_graph_error,
    HTTPException: on_graph_error,
})
async def graph_events(request: Request, version: FromPath[str],
                       pixel_id: FromPath[str]) -> Response:
    return await handle_graph_events(context_of(request), request, version, pixel_id)


ROUTES = [go, events, beacon, graph_events, script, healthz, readyz, metrics_endpoint]


def on_input_error(request: Request, exc: InputError) -> Response:
    context_of(request).metrics.requests.labels(_route_of(request), str(exc.status)).inc()
    return _error(exc.message, exc.status)


def on_storage_error(request: Request, exc: StorageError) -> Response:
    return storage_error_response(context_of(request), request, exc)


def storage_error_response(ctx: CollectorContext, request: Request,
                           exc: StorageError) -> Response:
    ctx.metrics.requests.labels(_route_of(request), "503").inc()
    return _error(f"{exc}; retry shortly", 503, {"Retry-After": "1"})


def on_http_error(request: Request, exc: HTTPException) -> Response:
    if _route_of(request) == "graph":  # e.g. a GET there (405), refused before the route
        return on_graph_error(request, exc)
    ctx = context_of(request)
    status = exc.status_code
    ctx.metrics.requests.labels(_route_of(request), str(status)).inc()
    messages = {
        404: "there is nothing at this address",
        405: f"{request.method} is not allowed here",
        413: f"the request body is larger than {ctx.settings.collector.max_body_bytes} bytes",
    }
    return _error(messages.get(status, str(exc.detail)), status, exc.headers)  # 405: Allow


def _route_of(request: Request) -> str:
    path = request.url.path
    for prefix, name in (("/go/", "go"), ("/v1/events", "events"), ("/v1/beacon", "beacon")):
        if path.startswith(prefix):
            return name
    if path.endswith("/events") and path.count("/") == 3:
        return "graph"
    return "other"


def create_app() -> CollectorApp:
    """granian's factory: settings from $PIXELRELAY_CONFIG, JSON logs on stdout."""
    configure_logging("collector", os.environ.get("PIXELRELAY_LOG_LEVEL", "INFO"))
    reloads = ReloadSignal()
    reloads.expect()  # from before the file is read: a SIGHUP from now on reads it again
    app = build_app(load_worker_settings())  # a broken file: the last good one
    app.litestar.state[RELOADS] = reloads
    hashing.preload()  # the country and state tables, before the first request and the freeze
    # What exists now (modules, the app, its routes) lives as long as the worker: move it out of
    # the cyclic collector's sight, or every full collection rescans it and stalls all requests
    # (about 40 ms each, several times a minute under load).
    gc.freeze()
    return app

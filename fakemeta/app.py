"""The fake Meta Graph API as an ASGI app (Litestar), standing in for graph.facebook.com.

Graph routes answer like Meta (``POST /{version}/{pixel_id}/events``, ``GET
/{version}/{pixel_id}``); ``/_fake/*`` routes let tests see what arrived and change the faults
while running. ``create_app`` builds one independent fake per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeAlias

import msgspec
import structlog
from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import MethodNotAllowedException, NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery

from fakemeta import _errors
from fakemeta._errors import MetaError
from fakemeta._faults import FaultOverride
from fakemeta._graph import FakeGraph, GraphCall, new_fbtrace_id
from fakemeta._options import FakeMetaOptions

log = structlog.get_logger("fakemeta")

AnyRequest: TypeAlias = Request[Any, Any, Any]

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def create_app(
    options: FakeMetaOptions | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> Litestar:
    """A fresh fake Graph API; ``options=None`` reads ``FAKEMETA_*`` from the environment.

    ``clock`` drives outage windows and throttling, ``wall_clock`` the event_time checks;
    tests pass their own to control time.
    """
    graph = FakeGraph(options or FakeMetaOptions.from_env(), clock=clock, wall_clock=wall_clock)
    app = Litestar(
        route_handlers=_route_handlers(graph),
        exception_handlers={
            NotFoundException: _render_unknown_path,
            MethodNotAllowedException: _render_unknown_path,
            500: _render_crash,
        },
        openapi_config=None,
        # Leave stdlib logging to whoever runs the app; crashes are logged by _render_crash.
        logging_config=None,
    )
    app.state.graph = graph
    return app


def _route_handlers(graph: FakeGraph) -> list[HTTPRouteHandler]:
    @post("/{version:str}/{pixel_id:str}/events", status_code=200)
    async def post_events(
        request: AnyRequest, version: FromPath[str], pixel_id: FromPath[str]
    ) -> Response[bytes]:
        await graph.hold()
        try:
            count = graph.receive_events(version, pixel_id, await _graph_call(request))
        except MetaError as error:
            return _render_error(error, version)
        trace_id = new_fbtrace_id()
        body = {"events_received": count, "messages": [], "fbtrace_id": trace_id}
        return _json(body, version=version, trace_id=trace_id)

    @get("/{version:str}/{pixel_id:str}")
    async def get_pixel(
        request: AnyRequest, version: FromPath[str], pixel_id: FromPath[str]
    ) -> Response[bytes]:
        await graph.hold()
        try:
            pixel = graph.describe_pixel(version, pixel_id, await _graph_call(request))
        except MetaError as error:
            return _render_error(error, version)
        return _json(pixel, version=version, trace_id=new_fbtrace_id())

    @get("/_fake/healthz")
    async def healthz() -> Response[bytes]:
        return _json({"status": "ok"})

    @get("/_fake/received")
    async def received() -> Response[bytes]:
        return _json(graph.store.summary())

    @get("/_fake/events")
    async def events(pixel_id: FromQuery[str]) -> Response[bytes]:
        return _json(graph.store.pixel_events(pixel_id))

    @get("/_fake/arrivals")
    async def arrivals(pixel_id: FromQuery[str], event_name: FromQuery[str]) -> Response[bytes]:
        return _json(graph.store.arrivals(pixel_id, event_name))

    @post("/_fake/reset", status_code=200)
    async def reset() -> Response[bytes]:
        graph.store.reset()
        graph.faults.reset_throttle()
        log.info("fake_reset")
        return _json({"reset": True})

    @get("/_fake/faults")
    async def show_faults() -> Response[bytes]:
        return _json(graph.faults.snapshot())

    @post("/_fake/faults", status_code=200)
    async def change_faults(request: AnyRequest) -> Response[bytes]:
        try:
            override = msgspec.json.decode(await request.body() or b"{}", type=FaultOverride)
            graph.faults.apply(override)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            return _json({"error": f"Fault settings refused: {exc}"}, status=400)
        log.info("faults_changed", **graph.faults.snapshot())
        return _json(graph.faults.snapshot())

    return [
        post_events, get_pixel, healthz, received, events, arrivals, reset, show_faults,
        change_faults,
    ]


async def _graph_call(request: AnyRequest) -> GraphCall:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    form: dict[str, str] | None = None
    body = b""
    if content_type in _FORM_TYPES:
        fields = await request.form()
        form = {}
        for key, value in fields.items():
            # curl -F 'data=@events.json' sends a part as a file: its text is the value.
            if not isinstance(value, str):
                value = (await value.read()).decode("utf-8", "replace")
            form[key] = value
    elif request.method == "POST":
        body = await request.body()
    return GraphCall(
        query=dict(request.query_params),
        form=form,
        body=body,
        authorization=request.headers.get("authorization", ""),
    )


def _json(
    body: Any, *, status: int = 200, version: str | None = None, trace_id: str | None = None
) -> Response[bytes]:
    headers = {}
    if version is not None:
        headers["facebook-api-version"] = version  # Meta echoes the version it served
    if trace_id is not None:
        headers["x-fb-trace-id"] = trace_id
    return Response(
        msgspec.json.encode(body),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _render_error(error: MetaError, version: str | None = None) -> Response[bytes]:
    trace_id = new_fbtrace_id()
    return _json(error.body(trace_id), status=error.http_status, version=version, trace_id=trace_id)


def _render_unknown_path(request: AnyRequest, exc: Exception) -> Response[bytes]:
    return _render_error(_errors.unknown_path(request.url.path))


def _render_crash(request: AnyRequest, exc: Exception) -> Response[bytes]:
    # A bug in the fake must not pass for a Meta answer silently: log it, then answer 500.
    log.exception("fake_crashed", path=request.url.path)
    return _render_error(_errors.server_error())

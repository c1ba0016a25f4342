"""Login and logout, the live overview, find, links, pixels and the audit log."""

from __future__ import annotations

import io
import time
from typing import Annotated, Any

import msgspec
from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException
from litestar.params import Body, QueryParameter
from litestar.response import Redirect, Template

from dashboard import auditlog
from dashboard.app_support import ctx_of, local_path, operator_of, peer_address
from dashboard.charts import line_chart, sparkline
from dashboard.operators import authenticate
from dashboard.security import Throttle, start_session
from relay import keys
from relay.clicks import Clicks
from relay.stats import MATCH_KEY_LABELS, MATCH_KEYS, RANGES, read_window
from relay.status import pixel_states, queue_depths, workers
from relay.tools import trace

RANGE_LABELS = {"1h": "last hour", "24h": "last 24 hours", "7d": "last 7 days"}
SERIES = (("received", "received"), ("delivered", "delivered"), ("attempt", "retried"),
          ("dead", "dead"), ("duplicate", "duplicate"))


class LoginForm(msgspec.Struct):
    name: str = ""
    password: str = ""
    next: str = "/"


def _range(value: str | None) -> str:
    if value in (None, ""):
        return "1h"
    if value not in RANGES:
        raise HTTPException(status_code=400,
                            detail=f"range must be one of {', '.join(RANGES)}, not {value!r}")
    return value


# -- login --------------------------------------------------------------------------------------
@get("/login", sync_to_thread=False)
def login_page(request: Request[Any, Any, Any],
               next_path: Annotated[str, QueryParameter(name="next")] = "/") -> Template:
    return Template("login.html", context={"next": local_path(next_path), "error": None})


@post("/login", sync_to_thread=True, status_code=303)
def login(request: Request[Any, Any, Any],
          data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)]
          ) -> Any:
    ctx = ctx_of(request)
    d = ctx.settings.dashboard
    throttle = Throttle(ctx.client, d.login_free_failures, d.login_max_delay_s)
    address = peer_address(request)
    name = data.name.strip()
    wait = throttle.wait_s(name, address)
    if wait:
        return Template("login.html", status_code=429, context={
            "next": local_path(data.next), "name": name,
            "error": f"Too many failed logins: try again in {wait} s."})
    operator = authenticate(ctx.settings, name, data.password)
    if operator is None:
        throttle.failed(name, address)
        auditlog.record(ctx.client, name[:64], "", "login_failed", address=address)
        return Template("login.html", status_code=401, context={
            "next": local_path(data.next), "name": name,
            "error": "That name and password do not match an operator."})
    throttle.succeeded(name, address)
    start_session(request.scope)
    request.set_session({"operator": operator.name, "role": operator.role,
                         "login_at": time.time()})
    auditlog.record(ctx.client, operator.name, operator.role, "login", address=address)
    return Redirect(local_path(data.next), status_code=303)


@post("/logout", sync_to_thread=True, status_code=303)
def logout(request: Request[Any, Any, Any]) -> Redirect:
    ctx = ctx_of(request)
    operator = operator_of(request)
    auditlog.record(ctx.client, operator.name, operator.role, "logout",
                    address=peer_address(request))
    request.clear_session()
    return Redirect("/login", status_code=303)


# -- overview -----------------------------------------------------------------------------------
def overview_context(request: Request[Any, Any, Any], range_name: str) -> dict[str, Any]:
    ctx = ctx_of(request)
    now = int(time.time() * 1000)
    window = read_window(ctx.client, range_name, now, ctx.windows)
    start = window.buckets[0].start_ms if window.buckets else now
    totals = {state: window.total(state) for state in
              ("received", "delivered", "attempt", "dead", "duplicate", "deferred", "withheld")}
    depths = queue_depths(ctx.client, now)
    waiting = sum(q.inbox_events for q in depths)
    settled = totals["delivered"] + totals["dead"]
    collector = ctx.collector_metrics()
    funnel = [("received", "received", totals["received"]),
              ("refused", "refused at the door (4xx, since the collector started)",
               None if collector is None else int(collector["refused"])),
              ("withheld", "withheld for want of consent (counted, never stored or sent)",
               totals["withheld"]),
              ("duplicate", "duplicate", totals["duplicate"]),
              ("waiting", "waiting now (inbox)", waiting),
              ("dead", "dead", totals["dead"]),
              ("delivered", "delivered", totals["delivered"])]
    states = [state for state, _ in SERIES]
    event_names = window.names("event_name", states)
    pixel_ids = [p.id for p in ctx.settings.pixels]
    chart = line_chart(
        f"Events per {'minute' if window.bucket_ms == 60_000 else 'hour'}, "
        f"{RANGE_LABELS[range_name]}",
        [(label, window.series(state)) for state, label in SERIES], start, window.bucket_ms,
        "flow-chart")
    by_event = [{"name": n, **{s: window.total(s, event_name=n) for s, _ in SERIES},
                 "spark": sparkline(window.series("received", event_name=n), f"received {n}")}
                for n in event_names if n]
    by_pixel = [{"name": p, **{s: window.total(s, pixel=p) for s, _ in SERIES},
                 "withheld": window.total("withheld", pixel=p),
                 "spark": sparkline(window.series("delivered", pixel=p), f"delivered {p}")}
                for p in sorted(set(pixel_ids) | set(window.names("pixel", states))) if p]
    timeout_ms = ctx.settings.relay.heartbeat_timeout_ms
    return {
        "range": range_name, "ranges": RANGE_LABELS, "now_ms": now, "totals": totals,
        "success": totals["delivered"] / settled if settled else None,
        "funnel": funnel, "chart": chart, "series": SERIES, "by_event": by_event,
        "by_pixel": by_pixel, "depths": depths,
        "delivery": window.delivery_latency(), "meta_request": window.request_latency(),
        "latency_by_pixel": [(p, window.delivery_latency(p), window.request_latency(p))
                             for p in pixel_ids],
        "workers": workers(ctx.client, now), "worker_timeout_ms": timeout_ms,
        "pixels": pixel_states(ctx.client, pixel_ids, now), "collector": collector,
        "dead_count": ctx.dead.count(),
    }


@get("/", sync_to_thread=True)
def overview(request: Request[Any, Any, Any],
             range_name: Annotated[str | None, QueryParameter(name="range")] = None) -> Template:
    context = overview_context(request, _range(range_name))
    return Template("overview.html", context={**context, "operator": operator_of(request),
                                              "page": "overview"})


@get("/fragments/overview", sync_to_thread=True)
def overview_fragment(request: Request[Any, Any, Any],
                      range_name: Annotated[str | None, QueryParameter(name="range")] = None
                      ) -> Template:
    return Template("_overview_live.html",
                    context=overview_context(request, _range(range_name)))


# -- find ---------------------------------------------------------------------------------------
@get("/find", sync_to_thread=True)
def find(request: Request[Any, Any, Any],
         q: Annotated[str, QueryParameter(name="q", max_length=200)] = "") -> Template:
    ctx = ctx_of(request)
    query = q.strip()
    timeline = click = None
    click_events: list[str] = []
    if query:
        out = io.StringIO()
        found = trace(ctx.settings, query, out, client=ctx.client, search=False) == 0
        timeline = out.getvalue() if found else None
        clicks = Clicks(ctx.client)
        c = clicks.get(query)
        if c is not None:
            click = {"slug": c.slug, "time_ms": c.time_ms, "fbc": bool(c.fbc),
                     "fbp": bool(c.fbp), "ip": bool(c.client_ip_address),
                     "ua": bool(c.client_user_agent)}
        event_ids = sorted({keys.split_dedup_key(k)[2] for k in clicks.later_events(query)}
                           - {query})
        for event_id in event_ids:
            out = io.StringIO()
            trace(ctx.settings, event_id, out, client=ctx.client, search=False)
            click_events.append(out.getvalue())
    return Template("find.html", context={"q": query, "timeline": timeline, "click": click,
                                          "click_events": click_events,
                                          "operator": operator_of(request), "page": "find"})


# -- links and pixels ---------------------------------------------------------------------------
@get("/links", sync_to_thread=True)
def links(request: Request[Any, Any, Any],
          range_name: Annotated[str | None, QueryParameter(name="range")] = None) -> Template:
    ctx = ctx_of(request)
    r = _range(range_name)
    window = read_window(ctx.client, r, cache=ctx.windows)
    rows = []
    for link in ctx.settings.links:
        delivered = sum(window.total("delivered", p, link.event_name) for p in link.pixels)
        dead = sum(window.total("dead", p, link.event_name) for p in link.pixels)
        rows.append({
            "slug": link.slug, "pixels": link.pixels, "event_name": link.event_name,
            "clicks": window.total("lk.click", link.slug),
            "conversions": dict(sorted(window.per_event("lk.conv", link.slug).items())),
            "success": delivered / (delivered + dead) if delivered + dead else None,
            "spark": sparkline(window.series("lk.click", link.slug), f"clicks {link.slug}"),
        })
    collector = ctx.collector_metrics()
    return Template("links.html", context={"rows": rows, "range": r, "ranges": RANGE_LABELS,
                                           "collector": collector,
                                           "operator": operator_of(request), "page": "links"})


@get("/pixels", sync_to_thread=True)
def pixels(request: Request[Any, Any, Any],
           range_name: Annotated[str | None, QueryParameter(name="range")] = None) -> Template:
    ctx = ctx_of(request)
    r = _range(range_name)
    now = int(time.time() * 1000)
    window = read_window(ctx.client, r, now, ctx.windows)
    states = {s.pixel_id: s for s in pixel_states(ctx.client, [p.id for p in
                                                                 ctx.settings.pixels], now)}
    rows = []
    for pixel in ctx.settings.pixels:
        names = [n for n in window.event_names_of(pixel.id)
                 if any(window.total(what, pixel.id, n)
                        for what in ("received", "delivered", "dead", "withheld"))]
        events = []
        for n in names:
            delivered = window.total("delivered", pixel.id, n)
            dead = window.total("dead", pixel.id, n)
            events.append({"name": n, "received": window.total("received", pixel.id, n),
                           "delivered": delivered, "dead": dead,
                           "withheld": window.total("withheld", pixel.id, n),
                           "success": delivered / (delivered + dead) if delivered + dead
                           else None,
                           "coverage": window.coverage(pixel.id, n)})
        rows.append({"id": pixel.id, "state": states.get(pixel.id), "events": events,
                     "withheld": window.total("withheld", pixel.id),
                     "latency": window.delivery_latency(pixel.id),
                     "request": window.request_latency(pixel.id)})
    return Template("pixels.html", context={
        "rows": rows, "range": r, "ranges": RANGE_LABELS, "match_keys": MATCH_KEYS,
        "labels": MATCH_KEY_LABELS, "now_ms": now, "operator": operator_of(request),
        "page": "pixels"})


# -- audit log ----------------------------------------------------------------------------------
@get("/audit", sync_to_thread=True)
def audit(request: Request[Any, Any, Any],
          offset: Annotated[int, QueryParameter(name="offset", ge=0, le=10_000)] = 0) -> Template:
    ctx = ctx_of(request)
    entries = auditlog.recent(ctx.client, offset, 100)
    return Template("audit.html", context={
        "entries": entries, "offset": offset, "total": auditlog.total(ctx.client),
        "jobs": ctx.jobs.recent(), "operator": operator_of(request), "page": "audit"})


handlers = [login_page, login, logout, overview, overview_fragment, find, links, pixels, audit]

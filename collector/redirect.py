"""``/go/{slug}``: answer with a 302 at once, after the click's events are stored durably.

When nothing can store them (Redis unreachable and the disk spool full or failing), the
visitor is still sent on: the click is not recorded, and that is counted
(``pixelrelay_collector_unrecorded_clicks_total``) and logged (``click_not_recorded``), so an
operator sees what a full disk costs. A server event in that state is a 503 its sender retries;
a visitor would not retry, and a 503 would lose the sale as well as the click.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from litestar import Request, Response
from litestar.datastructures import Cookie

from collector.context import CollectorContext, now_ms
from collector.cookies import PlainCookie
from collector.destination import destination_url, query_pairs
from collector.visitor import (
    CLICK_COOKIE,
    FBC_COOKIE,
    FBP_COOKIE,
    choose_fbc,
    choose_fbp,
    client_ip,
)
from relay.clicks import new_click_id
from relay.consent import CONSENT_COOKIE, consent_from_cookie
from relay.errors import StorageError
from relay.events import ClickContext, MetaEvent, UserData
from relay.inbox import Write

log = structlog.get_logger("collector.redirect")
UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "utm_id")

NOT_FOUND_PAGE = (
    "<!doctype html><html lang=en><meta charset=utf-8><title>Link not found</title>"
    "<h1>Link not found</h1><p>This link does not exist or is no longer active.</p></html>"
)


def is_https(request: Request, ctx: CollectorContext) -> bool:
    scope = request.scope
    # What request.url.scheme says, without building the URL (4 us, a cache miss per click as
    # the query differs); a query that is not ASCII still builds it, since that can raise.
    if scope.get("query_string", b"").isascii():
        direct = bool(scope.get("server")) and scope.get("scheme", "http") == "https"
    else:
        direct = request.url.scheme == "https"
    if direct:
        return True
    peer = request.client.host if request.client else None
    return ctx.proxies.trusts(peer) and request.headers.get("x-forwarded-proto") == "https"


def visitor_cookie(ctx: CollectorContext, name: str, value: str, secure: bool) -> Cookie:
    return PlainCookie(
        key=name, value=value, max_age=ctx.cookie_max_age_s, path="/",
        domain=ctx.settings.collector.cookie_domain or None, samesite="lax", secure=secure,
        httponly=False,  # Meta's pixel reads _fbc/_fbp in the browser, pages _prconsent
    )


async def handle_redirect(ctx: CollectorContext, request: Request, slug: str) -> Response:
    link = ctx.links.get(slug)
    if link is None:
        ctx.requests_counter("go", "404").inc()
        return Response(NOT_FOUND_PAGE, status_code=404, media_type="text/html")

    headers = request.headers
    query_string = request.scope.get("query_string", b"").decode("latin-1")
    pairs = query_pairs(query_string)
    query: Mapping[str, str] = dict(pairs)
    now = now_ms()
    click_id = new_click_id(now)
    location = destination_url(link, click_id, query_string, pairs)
    response_headers = {"Location": location, "Cache-Control": "no-store",
                        "Referrer-Policy": "no-referrer-when-downgrade"}
    user_agent = headers.get("user-agent")

    if request.method == "HEAD" or ctx.bots.is_bot(user_agent):
        ctx.metrics.bots.inc()
        ctx.requests_counter("go", "302").inc()
        return Response(b"", status_code=302, headers=response_headers, media_type="text/plain")

    cookies = request.cookies
    consent = consent_from_cookie(cookies.get(CONSENT_COOKIE))
    pixels = [p for p in link.pixels if ctx.may_send(p, link.event_name, consent, link)]
    if not pixels:  # counted as withheld: nothing is stored and no cookie set, only redirected
        ctx.requests_counter("go", "302").inc()
        return Response(b"", status_code=302, headers=response_headers, media_type="text/plain")

    fbc, new_fbc = choose_fbc(query.get("fbclid") or None, cookies.get(FBC_COOKIE), now)
    fbp, new_fbp = choose_fbp(cookies.get(FBP_COOKIE), now)
    ip = client_ip(request.client.host if request.client else None, headers, ctx.proxies)
    utm = {k: query[k] for k in UTM_KEYS if query.get(k)}
    referrer = headers.get("referer")
    # The events' own fields are stored once, in the click context, when the events refer to
    # it (the relay completes them from it: relay.events.complete_from_click); else per event.
    refer = ctx.events_refer_to_click
    click = ClickContext(
        click_id=click_id, slug=slug, time_ms=now, fbc=fbc, fbp=fbp, client_ip_address=ip,
        client_user_agent=user_agent, utm=utm or None,
        page_url=location if refer else None, referrer_url=referrer if refer else None,
    )
    user_data = (UserData() if refer else
                 UserData(client_ip_address=ip, client_user_agent=user_agent, fbc=fbc, fbp=fbp))
    writes: list[Write] = [ctx.click_write(click)]
    for pixel_id in pixels:
        # The click id is the event_id: one event per pixel, each its own dedup key, and
        # ``trace <click_id>`` finds them in the ledger.
        event = MetaEvent(
            event_name=link.event_name, event_time=now // 1000, event_id=click_id,
            action_source="website", user_data=user_data,
            event_source_url=None if refer else location,
            referrer_url=None if refer else referrer,
            custom_data=dict(utm) if utm and not refer else None,
        )
        writes.append(ctx.event_write(pixel_id, event, source="redirect", click_id=click_id,
                                      received_ms=now))
    secure = is_https(request, ctx)
    set_cookies = []
    try:
        await ctx.enqueuer.store(writes)
    except StorageError as exc:
        ctx.metrics.unrecorded_clicks.inc()
        log.warning("click_not_recorded", slug=slug, pixels=len(pixels), reason=str(exc))
    else:
        ctx.events_counter("redirect").inc(len(pixels))
        set_cookies.append(visitor_cookie(ctx, CLICK_COOKIE, click_id, secure))
    ctx.requests_counter("go", "302").inc()
    if new_fbc and fbc:
        set_cookies.append(visitor_cookie(ctx, FBC_COOKIE, fbc, secure))
    if new_fbp:
        set_cookies.append(visitor_cookie(ctx, FBP_COOKIE, fbp, secure))
    return Response(b"", status_code=302, headers=response_headers, cookies=set_cookies,
                    media_type="text/plain")

"""``/go/{slug}``: answer with a 302 at once, after the click's events are stored durably."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit, urlunsplit

from litestar import Request, Response
from litestar.datastructures import Cookie

from collector.context import CollectorContext, now_ms
from collector.visitor import (
    CLICK_COOKIE,
    FBC_COOKIE,
    FBP_COOKIE,
    choose_fbc,
    choose_fbp,
    client_ip,
)
from relay.config import LinkSettings
from relay.events import ClickContext, MetaEvent, UserData, new_event_id
from relay.inbox import Write

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "utm_id")

NOT_FOUND_PAGE = (
    "<!doctype html><html lang=en><meta charset=utf-8><title>Link not found</title>"
    "<h1>Link not found</h1><p>This link does not exist or is no longer active.</p></html>"
)


def destination_url(link: LinkSettings, click_id: str, query: str) -> str:
    """The configured target with {click_id} filled and, if asked, the link's query appended."""
    target = link.destination.replace("{click_id}", click_id)
    if not link.forward_query or not query:
        return target
    template = _template(link.destination) if _INERT_CLICK_ID.fullmatch(click_id) else None
    if template is not None:
        extra = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True)
                 if k not in template.own_names]
        return template.fill(click_id, urlencode(extra))
    parts = urlsplit(target)
    own = parse_qsl(parts.query, keep_blank_values=True)
    own_names = {name for name, _ in own}
    extra = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in own_names]
    return urlunsplit(parts._replace(query=urlencode(own + extra)))


# Splitting and re-encoding the destination on every click was a tenth of a redirect's CPU; it
# is done once per destination instead, with "{click_id}" left in, and the id is filled into the
# result. That gives the same URL as filling first and splitting after when the id is made of
# characters that splitting, unquoting and quoting all leave alone (secrets.token_urlsafe's),
# and when "{click_id}" cannot interact with the query's parsing: no "%" escapes in the
# destination's query, no "{click_id}" in a parameter name. Anything else takes the general path.
_INERT_CLICK_ID = re.compile(r"[A-Za-z0-9_-]+")
_QUOTED_PLACEHOLDER = quote_plus("{click_id}")


@dataclass(frozen=True, slots=True)
class _Template:
    head: str  # scheme://netloc/path as urlunsplit writes it
    own_query: str  # the destination's query as urlencode re-writes it
    own_names: frozenset[str]
    fragment: str

    def fill(self, click_id: str, extra_query: str) -> str:
        own = self.own_query.replace(_QUOTED_PLACEHOLDER, click_id)
        query = f"{own}&{extra_query}" if own and extra_query else own or extra_query
        url = self.head.replace("{click_id}", click_id)
        if query:
            url += "?" + query
        if self.fragment:
            url += "#" + self.fragment.replace("{click_id}", click_id)
        return url


@lru_cache(maxsize=256)
def _template(destination: str) -> _Template | None:
    parts = urlsplit(destination)
    if parts.scheme not in ("http", "https") or "%" in parts.query:
        return None
    own = parse_qsl(parts.query, keep_blank_values=True)
    own_names = frozenset(name for name, _ in own)
    if any("{click_id}" in name for name in own_names):
        return None
    return _Template(head=urlunsplit(parts._replace(query="", fragment="")),
                     own_query=urlencode(own), own_names=own_names, fragment=parts.fragment)


def _is_https(request: Request, ctx: CollectorContext) -> bool:
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


# What SimpleCookie writes unquoted (http.cookies._LegalChars): such a name=value pair can be
# written as is. Anything else goes through Litestar's SimpleCookie path, which quotes it.
_PLAIN_COOKIE_TEXT = re.compile(r"[\w!#$%&'*+\-.^`|~:]+", re.ASCII)


@lru_cache(maxsize=64)
def _cookie_attributes(path: str, max_age: int | None, domain: str | None, secure: bool | None,
                       httponly: bool | None, samesite: Literal["lax", "strict", "none"]) -> str:
    """The '; Max-Age=...; Path=/; ...' tail, as Litestar itself renders it for these settings."""
    header = Cookie(key="k", value="v", path=path, max_age=max_age, domain=domain, secure=secure,
                    httponly=httponly, samesite=samesite).to_header(header="").strip()
    return header.removeprefix("k=v")


class _RedirectCookie(Cookie):
    """A Cookie that writes its own Set-Cookie header: the same bytes as Litestar's, without
    building a SimpleCookie per cookie (about a tenth of a redirect's CPU with three cookies)."""

    def to_encoded_header(self) -> tuple[bytes, bytes]:
        value = self.value or ""
        if (self.expires is not None or not _PLAIN_COOKIE_TEXT.fullmatch(self.key)
                or not _PLAIN_COOKIE_TEXT.fullmatch(value)):
            return super().to_encoded_header()
        tail = _cookie_attributes(self.path, self.max_age, self.domain, self.secure,
                                  self.httponly, self.samesite)
        return b"set-cookie", f"{self.key}={value}{tail}".encode("latin-1")


def _cookie(ctx: CollectorContext, name: str, value: str, secure: bool) -> Cookie:
    return _RedirectCookie(
        key=name, value=value, max_age=ctx.cookie_max_age_s, path="/",
        domain=ctx.settings.collector.cookie_domain or None, samesite="lax", secure=secure,
        httponly=False,  # Meta's pixel reads _fbc/_fbp in the browser
    )


async def handle_redirect(ctx: CollectorContext, request: Request, slug: str) -> Response:
    link = ctx.links.get(slug)
    if link is None:
        ctx.requests_counter("go", "404").inc()
        return Response(NOT_FOUND_PAGE, status_code=404, media_type="text/html")

    headers = request.headers
    query_string = request.scope.get("query_string", b"").decode("latin-1")
    query: Mapping[str, str] = dict(parse_qsl(query_string, keep_blank_values=True))
    click_id = secrets.token_urlsafe(12)
    location = destination_url(link, click_id, query_string)
    response_headers = {"Location": location, "Cache-Control": "no-store",
                        "Referrer-Policy": "no-referrer-when-downgrade"}
    user_agent = headers.get("user-agent")

    if request.method == "HEAD" or ctx.bots.is_bot(user_agent):
        ctx.metrics.bots.inc()
        ctx.requests_counter("go", "302").inc()
        return Response(b"", status_code=302, headers=response_headers, media_type="text/plain")

    now = now_ms()
    cookies = request.cookies
    fbc, new_fbc = choose_fbc(query.get("fbclid") or None, cookies.get(FBC_COOKIE), now)
    fbp, new_fbp = choose_fbp(cookies.get(FBP_COOKIE), now)
    ip = client_ip(request.client.host if request.client else None, headers, ctx.proxies)
    utm = {k: query[k] for k in UTM_KEYS if query.get(k)}
    click = ClickContext(
        click_id=click_id, slug=slug, time_ms=now, fbc=fbc, fbp=fbp, client_ip_address=ip,
        client_user_agent=user_agent, referrer=headers.get("referer"), landing_url=location,
        utm=utm or None,
    )
    user_data = UserData(client_ip_address=ip, client_user_agent=user_agent, fbc=fbc, fbp=fbp)
    writes: list[Write] = [ctx.click_write(click)]
    for pixel_id in link.pixels:
        event = MetaEvent(
            event_name=link.event_name, event_time=now // 1000, event_id=new_event_id(),
            action_source="website", user_data=user_data, event_source_url=location,
            referrer_url=headers.get("referer"), custom_data=dict(utm) if utm else None,
        )
        writes.append(ctx.event_write(pixel_id, event, source="redirect", click_id=click_id,
                                      received_ms=now))
    await ctx.enqueuer.store(writes)
    ctx.events_counter("redirect").inc(len(link.pixels))
    ctx.requests_counter("go", "302").inc()

    secure = _is_https(request, ctx)
    set_cookies = [_cookie(ctx, CLICK_COOKIE, click_id, secure)]
    if new_fbc and fbc:
        set_cookies.append(_cookie(ctx, FBC_COOKIE, fbc, secure))
    if new_fbp:
        set_cookies.append(_cookie(ctx, FBP_COOKIE, fbp, secure))
    return Response(b"", status_code=302, headers=response_headers, cookies=set_cookies,
                    media_type="text/plain")

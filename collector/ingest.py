"""``POST /v1/events`` (server to server) and ``POST /v1/beacon`` (browsers): validate, hash, store.

Both answer only after the events are stored durably: 202 for the API with the accepted ids,
204 for beacons. Bad input is a 4xx whose sentence names the event and the field.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple
from urllib.parse import urlsplit

import msgspec
from litestar import Request, Response
from litestar.datastructures import Cookie

from collector.context import CollectorContext, json_encode, now_ms
from collector.redirect import is_https, visitor_cookie
from collector.visitor import (
    CLICK_COOKIE,
    FBC_COOKIE,
    FBP_COOKIE,
    client_ip,
    is_valid_fbc,
    is_valid_fbp,
)
from relay.config import ApiKeySettings
from relay.consent import CONSENT_COOKIE, Withheld, consent_from_cookie, cookie_value
from relay.errors import InputError
from relay.events import (
    MAX_EVENTS_PER_REQUEST,
    InboundEvent,
    InboundUserData,
    build_event,
    inbound_event,
)
from relay.inbox import Write
from relay.validation import problem_with_test_event_code

_json_decoder = msgspec.json.Decoder()


class BeaconEvent(msgspec.Struct, forbid_unknown_fields=True):
    """What ``pixelrelay.js`` sends with ``navigator.sendBeacon``."""

    pixel_id: str
    event_name: str
    event_id: str
    event_source_url: str | None = None
    referrer_url: str | None = None
    custom_data: dict[str, object] | None = None
    external_id: str | None = None
    consent: bool | None = None  # the page's consent signal; remembered in _prconsent


_beacon_decoder = msgspec.json.Decoder(BeaconEvent)


def _decode(decoder: msgspec.json.Decoder, body: bytes, what: str) -> object:
    if not body.strip():
        raise InputError(f"the request body is empty: send {what} as JSON", 400)
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InputError(_plain(str(exc), what), 422) from None
    except msgspec.DecodeError as exc:
        raise InputError(f"the request body is not valid JSON ({exc})", 400) from None
    except RecursionError:
        raise InputError("the request body is nested too deeply", 400) from None


def _plain(message: str, what: str) -> str:
    """msgspec's "Expected `int` - at `$[1].user_data.em`" as "events[1].user_data.em: ..."."""
    text, _, where = message.partition(" - at `")
    text = text.replace("`", "")
    path = where.rstrip("`").removeprefix("$")
    if not path:
        return f"invalid {what}: {text}"
    # Named like build_event's messages: events[1].x for a list, event.x / beacon.x for one.
    root = what if path.startswith("[") else what.removesuffix("s")
    return f"{root}{path}: {text}"


def _pixels_for(ctx: CollectorContext, key: ApiKeySettings, requested: str | None,
                where: str) -> list[str]:
    allowed = key.pixels or sorted(ctx.pixel_ids)
    if requested is None:
        return list(allowed)
    if requested not in ctx.pixel_ids:
        raise InputError(f"{where}.pixel_id {requested} is not a configured pixel", 422)
    if requested not in allowed:
        raise InputError(f"{where}.pixel_id {requested} is not allowed for this API key", 403)
    return [requested]


async def handle_server_events(ctx: CollectorContext, request: Request) -> Response:
    key = ctx.authenticate(request.headers.get("authorization"))
    decoded = _decode(_json_decoder, await request.body(), "events")
    if isinstance(decoded, list):
        located = [(f"events[{i}]", item) for i, item in enumerate(decoded)]
    else:
        located = [("event", decoded)]
    accepted, withheld, _ = await store_server_events(ctx, key, located)
    ctx.metrics.requests.labels("events", "202").inc()
    answer: dict[str, object] = {"accepted": len(accepted), "event_ids": accepted}
    if withheld:  # events x pixels kept from Meta for want of consent: counted, not stored
        answer["withheld"] = withheld
    return Response(json_encode(answer),
                    status_code=202, media_type="application/json")


class Stored(NamedTuple):
    """What ``store_server_events`` did: the accepted event_ids, and how many (event, pixel)
    pairs it kept from Meta for want of consent (``relay.consent``; counted, not stored), in
    all and by reason."""

    event_ids: list[str]
    withheld: int
    withheld_by_reason: Counter[Withheld]


async def store_server_events(ctx: CollectorContext, key: ApiKeySettings,
                              located: Sequence[tuple[str, object]],
                              pixel_id: str | None = None,
                              test_event_code: str | None = None) -> Stored:
    """Check, hash and durably store server events (``(where, decoded JSON)`` pairs) for the
    pixels ``key`` may send to, once stored.

    ``pixel_id`` (the Graph endpoint's path) applies to every event; otherwise each event's
    own ``pixel_id``, or every pixel the key is allowed. ``test_event_code`` (the Graph
    request's) applies to every event that names none itself. One bad event refuses the
    request.
    """
    if not located:
        raise InputError("the request holds no event", 422)
    if len(located) > MAX_EVENTS_PER_REQUEST:
        raise InputError(
            f"a request holds at most {MAX_EVENTS_PER_REQUEST} events, this one has "
            f"{len(located)}", 413,
        )
    received = now_ms()
    now_s = received / 1000
    relay = ctx.settings.relay
    writes: list[Write] = []
    accepted: list[str] = []
    withheld: Counter[Withheld] = Counter()
    for where, obj in located:
        item = inbound_event(obj, where)
        if pixel_id is not None and item.pixel_id not in (None, pixel_id):
            raise InputError(f"{where}.pixel_id {item.pixel_id} is not the pixel in the path "
                             f"({pixel_id})", 422)
        pixels = _pixels_for(ctx, key, pixel_id or item.pixel_id, where)
        code = item.test_event_code or test_event_code
        if (found := problem_with_test_event_code(code)) is not None:
            raise InputError(f"{where}.test_event_code {found}", 422)
        event = build_event(item, now_s=now_s, max_age_days=relay.max_event_age_days,
                            max_future_skew_s=ctx.settings.collector.max_future_skew_s,
                            where=where, phone_region=ctx.settings.phone_region(key, pixels))
        for pixel in pixels:
            reason = ctx.withhold(pixel, event.event_name, item.consent)
            if reason is not None:
                withheld[reason] += 1
                continue
            writes.append(ctx.event_write(pixel, event, source="server",
                                          click_id=item.click_id, received_ms=received,
                                          test_event_code=code))
        accepted.append(event.event_id)
    if writes:
        await ctx.enqueuer.store(writes)
    ctx.metrics.events.labels("server").inc(len(writes))
    return Stored(accepted, withheld.total(), withheld)


def _origin_of(request: Request) -> str | None:
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return origin.rstrip("/")
    referer = request.headers.get("referer")
    if referer:
        try:
            parts = urlsplit(referer)
        except ValueError:  # e.g. "http://[::1": not a URL, so no origin
            return None
        if parts.scheme and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}"
    return None


def consent_cookie(ctx: CollectorContext, consent: bool, request: Request) -> Cookie:
    """``_prconsent``: what the page said, for the redirects and beacons that follow."""
    return visitor_cookie(ctx, CONSENT_COOKIE, cookie_value(consent), is_https(request, ctx))


def cors_headers(ctx: CollectorContext, request: Request) -> dict[str, str]:
    """CORS answer for a beacon; raises 403 for an origin that is not configured."""
    origin = _origin_of(request)
    if origin is None or origin not in ctx.origins:
        raise InputError(
            f"origin {origin or '(none)'} may not send beacons: add it to "
            "collector.allowed_origins", 403,
        )
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


async def handle_beacon(ctx: CollectorContext, request: Request) -> Response:
    headers = cors_headers(ctx, request)
    beacon = _decode(_beacon_decoder, await request.body(), "beacon")
    assert isinstance(beacon, BeaconEvent)
    if beacon.pixel_id not in ctx.pixel_ids:
        raise InputError(f"beacon.pixel_id {beacon.pixel_id} is not a configured pixel", 422)
    if ctx.bots.is_bot(request.headers.get("user-agent")):
        ctx.metrics.bots.inc()  # headless browsers and crawlers running the page's script
        return Response(b"", status_code=204, headers=headers)
    cookies = request.cookies
    consent = beacon.consent
    remembered = [] if consent is None else [consent_cookie(ctx, consent, request)]
    if consent is None:
        consent = consent_from_cookie(cookies.get(CONSENT_COOKIE))
    if not ctx.may_send(beacon.pixel_id, beacon.event_name, consent):
        ctx.metrics.requests.labels("beacon", "204").inc()
        return Response(b"", status_code=204, headers=headers, cookies=remembered)
    fbc = cookies.get(FBC_COOKIE)
    fbp = cookies.get(FBP_COOKIE)
    inbound = InboundEvent(
        event_name=beacon.event_name,
        event_id=beacon.event_id,
        action_source="website",
        event_source_url=beacon.event_source_url or request.headers.get("referer"),
        referrer_url=beacon.referrer_url,
        custom_data=dict(beacon.custom_data) if beacon.custom_data else None,
        user_data=InboundUserData(
            client_ip_address=client_ip(request.client.host if request.client else None,
                                        request.headers, ctx.proxies),
            client_user_agent=request.headers.get("user-agent"),
            fbc=fbc if is_valid_fbc(fbc) else None,
            fbp=fbp if is_valid_fbp(fbp) else None,
            external_id=beacon.external_id,
        ),
    )
    received = now_ms()
    event = build_event(inbound, now_s=time.time(),
                        max_age_days=ctx.settings.relay.max_event_age_days,
                        max_future_skew_s=ctx.settings.collector.max_future_skew_s,
                        where="beacon")
    click_id = cookies.get(CLICK_COOKIE) or None
    await ctx.enqueuer.store([ctx.event_write(beacon.pixel_id, event, source="beacon",
                                              click_id=click_id, received_ms=received)])
    ctx.metrics.events.labels("beacon").inc()
    ctx.metrics.requests.labels("beacon", "204").inc()
    return Response(b"", status_code=204, headers=headers, cookies=remembered)

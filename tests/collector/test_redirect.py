"""collector.redirect through the app: ``GET /go/{slug}`` on fakeredis."""

from __future__ import annotations

import time
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

import httpx
import msgspec
from fakeredis.aioredis import FakeRedis

from collector.context import CollectorContext
from collector.metrics import CollectorMetrics
from relay.clicks import bucket_of
from relay.config import Settings
from relay.events import Envelope, UserData, complete_from_click, enrich_from_click
from tests.collector.support import (
    BROWSER_UA,
    DESTINATION_HOST,
    PIXEL,
    SECOND_PIXEL,
    VISITOR_IP,
    inbox,
    metric_value,
    stored_click,
)

FBCLID = "IwAR2F4-dbP0l7Mn1Iaw_QQGCINEz7PYXQvwjNwB_qa2ofrHy"
BROWSER = {"user-agent": BROWSER_UA}


def cookies_set(response: httpx.Response) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    return {name: morsel.value for name, morsel in jar.items()}


async def click(client: httpx.AsyncClient, query: str = "", **headers: str) -> httpx.Response:
    return await client.get(f"/go/demo{query}", headers={**BROWSER, **headers})


async def stored_events(redis: FakeRedis) -> list[Envelope]:
    return [*await inbox(redis, "relay_low", PIXEL), *await inbox(redis, "relay_low", SECOND_PIXEL)]


async def delivered_user_data(redis: FakeRedis) -> list[UserData]:
    """The stored events' user_data as the relay sends it, filled in from their click context."""
    result = []
    for envelope in await stored_events(redis):
        context = await stored_click(redis, envelope.click_id or "")
        result.append(enrich_from_click(envelope.event, context).user_data)
    return result


async def test_a_click_is_redirected_to_the_configured_destination(
        client: httpx.AsyncClient) -> None:
    response = await click(client)

    assert 302 == response.status_code
    assert (DESTINATION_HOST, "/landing") == (urlsplit(response.headers["location"]).netloc,
                                              urlsplit(response.headers["location"]).path)


async def test_the_destination_gets_the_click_id_and_the_links_query(
        client: httpx.AsyncClient) -> None:
    response = await click(client, f"?fbclid={FBCLID}&utm_source=fb")

    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert {"cid": [cookies_set(response)["_prclk"]], "fbclid": [FBCLID],
            "utm_source": ["fb"]} == query


async def test_the_redirect_is_never_cached(client: httpx.AsyncClient) -> None:
    response = await click(client)

    assert "no-store" == response.headers["cache-control"]


async def test_a_click_sets_the_fbc_fbp_and_click_cookies(client: httpx.AsyncClient) -> None:
    response = await click(client, f"?fbclid={FBCLID}")

    cookies = cookies_set(response)
    assert {"_fbc", "_fbp", "_prclk"} == set(cookies)
    assert FBCLID == cookies["_fbc"].split(".", 3)[3]


async def test_the_cookies_last_the_configured_days_for_the_whole_site(
        client: httpx.AsyncClient, settings: Settings) -> None:
    response = await click(client, f"?fbclid={FBCLID}")

    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    max_age = str(settings.collector.cookie_max_age_days * 86_400)
    assert {name: (max_age, "/", "lax") for name in ("_fbc", "_fbp", "_prclk")} == {
        name: (m["max-age"], m["path"], m["samesite"].lower()) for name, m in jar.items()
    }


async def test_each_pixel_gets_a_page_view_with_the_visitors_data(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    response = await click(client, f"?fbclid={FBCLID}")

    cookies = cookies_set(response)
    events = await stored_events(redis)
    context = await stored_click(redis, cookies["_prclk"])
    assert [PIXEL, SECOND_PIXEL] == [e.pixel_id for e in events]
    for envelope in events:
        event = envelope.event
        assert ("PageView", "website", "redirect", cookies["_prclk"]) == (
            event.event_name, event.action_source, envelope.source, envelope.click_id
        )
        # The visitor's data is stored once, in the click context, and filled in by the relay.
        assert UserData() == event.user_data
        event = enrich_from_click(event, context)
        assert (cookies["_fbc"], cookies["_fbp"], VISITOR_IP, BROWSER_UA) == (
            event.user_data.fbc, event.user_data.fbp, event.user_data.client_ip_address,
            event.user_data.client_user_agent,
        )


async def test_each_pixels_page_view_has_the_click_id_as_its_event_id(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    first = cookies_set(await click(client))["_prclk"]
    second = cookies_set(await click(client))["_prclk"]

    events = await stored_events(redis)
    assert first != second
    assert sorted([first, first, second, second]) == sorted(e.event.event_id for e in events)
    assert 4 == len({e.dedup_key for e in events})  # one event per pixel and click


async def test_the_page_views_landing_url_referrer_and_utms_are_stored_once_in_the_click(
        client: httpx.AsyncClient, redis: FakeRedis) -> None:
    response = await click(client, f"?fbclid={FBCLID}&utm_source=fb&utm_campaign=spring",
                           referer="https://m.facebook.com/")

    events = await stored_events(redis)
    context = await stored_click(redis, cookies_set(response)["_prclk"])
    assert [(None, None, None)] * 2 == [
        (e.event.event_source_url, e.event.referrer_url, e.event.custom_data) for e in events]
    sent = complete_from_click(events[0].event, context)
    assert (response.headers["location"], "https://m.facebook.com/",
            {"utm_source": "fb", "utm_campaign": "spring"}, cookies_set(response)["_fbc"]) == (
        sent.event_source_url, sent.referrer_url, sent.custom_data, sent.user_data.fbc)


async def test_the_click_context_is_kept_for_the_click_ttl(
        client: httpx.AsyncClient, redis: FakeRedis, settings: Settings) -> None:
    response = await click(client, f"?fbclid={FBCLID}&utm_campaign=spring",
                           referer="https://m.facebook.com/")

    click_id = cookies_set(response)["_prclk"]
    context = await stored_click(redis, click_id)
    ttl_s = await redis.ttl(bucket_of(click_id) or "")
    assert ("demo", cookies_set(response)["_fbc"], VISITOR_IP, {"utm_campaign": "spring"}) == (
        context.slug, context.fbc, context.client_ip_address, context.utm
    )
    # The click's hash expires click_ttl_days after the end of the click's day (UTC).
    until_midnight_s = 86_400 - int(time.time()) % 86_400
    assert abs(settings.collector.click_ttl_days * 86_400 + until_midnight_s - ttl_s) <= 5


async def test_an_fbc_cookie_with_the_same_fbclid_is_kept(client: httpx.AsyncClient,
                                                          redis: FakeRedis) -> None:
    existing = f"fb.1.1780000000000.{FBCLID}"

    response = await click(client, f"?fbclid={FBCLID}", cookie=f"_fbc={existing}")

    assert "_fbc" not in cookies_set(response)
    assert {existing} == {u.fbc for u in await delivered_user_data(redis)}


async def test_an_fbc_cookie_with_another_fbclid_is_replaced(client: httpx.AsyncClient) -> None:
    response = await click(client, f"?fbclid={FBCLID}", cookie="_fbc=fb.1.1780000000000.Older")

    assert FBCLID == cookies_set(response)["_fbc"].split(".", 3)[3]


async def test_an_fbp_cookie_is_kept_and_reported(client: httpx.AsyncClient,
                                                  redis: FakeRedis) -> None:
    existing = "fb.1.1780000000000.1234567890"

    response = await click(client, cookie=f"_fbp={existing}")

    assert "_fbp" not in cookies_set(response)
    assert {existing} == {u.fbp for u in await delivered_user_data(redis)}


async def test_a_click_through_the_trusted_proxy_reports_the_forwarded_address(
        proxied_client: httpx.AsyncClient, redis: FakeRedis) -> None:
    await click(proxied_client, **{"x-forwarded-for": "6.6.6.6, 198.51.100.1"})

    assert {"198.51.100.1"} == {
        u.client_ip_address for u in await delivered_user_data(redis)
    }


async def test_cookies_are_secure_behind_a_tls_proxy(proxied_client: httpx.AsyncClient) -> None:
    response = await click(proxied_client, **{"x-forwarded-proto": "https"})

    assert all("secure" in h.lower() for h in response.headers.get_list("set-cookie"))


async def test_a_bot_is_redirected_but_not_reported(client: httpx.AsyncClient,
                                                    redis: FakeRedis) -> None:
    response = await click(client, **{"user-agent": "facebookexternalhit/1.1"})

    assert (302, [], []) == (response.status_code, await redis.keys("*"),
                             response.headers.get_list("set-cookie"))


async def test_a_head_request_is_redirected_but_not_reported(client: httpx.AsyncClient,
                                                             redis: FakeRedis) -> None:
    response = await client.head("/go/demo", headers=BROWSER)

    assert (302, [], DESTINATION_HOST) == (response.status_code, await redis.keys("*"),
                                           urlsplit(response.headers["location"]).netloc)


async def test_bots_are_counted_in_the_metrics(client: httpx.AsyncClient) -> None:
    await click(client, **{"user-agent": "Slackbot-LinkExpanding 1.0"})
    await client.head("/go/demo", headers=BROWSER)

    metrics = (await client.get("/metrics")).text
    assert 2.0 == metric_value(metrics, "pixelrelay_collector_bot_clicks_total")


async def test_an_unknown_slug_is_a_404_page(client: httpx.AsyncClient,
                                             redis: FakeRedis) -> None:
    response = await client.get("/go/nope", headers=BROWSER)

    assert (404, "text/html", []) == (response.status_code,
                                      response.headers["content-type"].split(";")[0],
                                      await redis.keys("*"))
    assert "Link not found" in response.text


async def test_a_redirect_never_leaves_the_configured_host(client: httpx.AsyncClient) -> None:
    for query in ("?next=https://evil.example", "?url=//evil.example", "?cid=https://evil.example",
                  "?%0d%0aLocation:%20https://evil.example"):
        response = await click(client, query)

        target = urlsplit(response.headers["location"])
        assert ("https", DESTINATION_HOST) == (target.scheme, target.netloc), query


async def test_a_forged_fbclid_keeps_the_visitors_fbc(client: httpx.AsyncClient,
                                                      redis: FakeRedis) -> None:
    existing = f"fb.1.1780000000000.{FBCLID}"

    response = await click(client, "?fbclid=%ff%fe%0d%0a", cookie=f"_fbc={existing}")

    assert (302, False) == (response.status_code, "_fbc" in cookies_set(response))
    assert {existing} == {u.fbc for u in await delivered_user_data(redis)}


async def test_events_carry_the_visitors_data_when_the_click_context_expires_first(
        settings: Settings) -> None:
    # Given click contexts kept for a shorter time than events may wait to be sent
    short = msgspec.structs.replace(settings, collector=msgspec.structs.replace(
        settings.collector, click_ttl_days=settings.relay.max_event_age_days - 1))

    # Then the collector writes the visitor's data into each event itself
    ctx = CollectorContext(short, None, CollectorMetrics())  # type: ignore[arg-type]
    assert (False, True) == (ctx.events_refer_to_click, CollectorContext(
        settings, None, CollectorMetrics()).events_refer_to_click)  # type: ignore[arg-type]

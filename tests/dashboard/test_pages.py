"""Every page and fragment, checked by parsing the HTML: the right numbers in the right cells."""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from unittest.mock import Mock

import fakeredis
import httpx
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from collector.withheld import WithheldCounter, redis_adder
from relay import keys
from relay.breaker import Breaker
from relay.clicks import Clicks, encode_click, new_click_id
from relay.config import RelaySettings
from relay.deadletters import DeadLetters
from relay.errors import PermanentError
from relay.events import ClickContext, Envelope, encode, pack_envelope
from relay.inbox import ClickWrite, EventWrite, store_sync
from relay.ledger import Entry, Ledger
from relay.status import PixelActivity, WorkerPresence
from tests.dashboard.conftest import OTHER_PIXEL, PIXEL, cell_text, csrf_of, soup
from tests.relay.factories import envelope
from tests.support import ROOT

TTL_S = 7 * 86_400
QUEUE = "relay_high"  # Purchase and Lead are high-priority events
REJECTED = {"kind": "rejected", "message": "Invalid parameter", "code": 100,
            "subcode": 2804001, "fbtrace_id": "trace-abc"}


def add_dead_letter(redis: fakeredis.FakeRedis, event_id: str, *, pixel: str = PIXEL,
                    event_name: str = "Purchase", reason: dict | None = None,
                    ip: str = "203.0.113.7", ua: str = "Mozilla/5.0") -> str:
    env = envelope(event_id, pixel_id=pixel, event_name=event_name, client_ip_address=ip,
                   client_user_agent=ua)
    accept(redis, env)
    redis.delete(keys.inbox(QUEUE, pixel), keys.inbox_pixels(QUEUE))  # taken by a worker
    DeadLetters(redis, TTL_S).add([env], reason or REJECTED)
    Ledger(redis, TTL_S).record([Entry(env.dedup_key, event_id, pixel, event_name, "dead",
                                       {"attempt": 1, **(reason or REJECTED)},
                                       env.received_ms, env.source)])
    return env.dedup_key


def accept(redis: fakeredis.FakeRedis, env: Envelope) -> None:
    """What the collector's STORE does: the event waits in its inbox, recorded as accepted."""
    store_sync(redis, [EventWrite(QUEUE, env.pixel_id, env.dedup_key, env.received_ms,
                                  pack_envelope(env))], TTL_S)


def count(redis: fakeredis.FakeRedis, counts: dict[str, int], at_ms: int | None = None) -> None:
    Ledger(redis, TTL_S).count(Counter(counts), at_ms or int(time.time() * 1000))


def by_stat(page: str) -> dict[str, str]:
    return {el["data-stat"]: cell_text(el) for el in soup(page).select("[data-stat]")}


async def test_overview_shows_the_minute_counters_in_their_cells(
        operator: AsyncTestClient, redis: fakeredis.FakeRedis) -> None:
    count(redis, {f"received:{PIXEL}:Purchase": 7, f"delivered:{PIXEL}:Purchase": 5,
                  f"dead:{PIXEL}:Purchase": 1, f"duplicate:{PIXEL}:Purchase": 1,
                  f"received:{OTHER_PIXEL}:PageView": 3,
                  f"delivered:{OTHER_PIXEL}:PageView": 3})
    count(redis, {f"attempt:{PIXEL}:Purchase": 2}, int(time.time() * 1000) - 10 * 60_000)

    page = (await operator.get("/")).text

    stats = by_stat(page)
    assert ("10", "8", "1", "2", "1", "88.9 % success") == (
        stats["received"], stats["delivered"], stats["dead"], stats["attempt"],
        stats["duplicate"], stats["success"])
    rows = {r["data-event"]: {c["data-col"]: cell_text(c) for c in r.select("td[data-col]")}
            for r in soup(page).select("#by-event tbody tr[data-event]")}
    assert {"Purchase": {"received": "7", "delivered": "5", "attempt": "2", "dead": "1",
                         "duplicate": "1"},
            "PageView": {"received": "3", "delivered": "3", "attempt": "0", "dead": "0",
                         "duplicate": "0"}} == rows
    assert soup(page).select_one("svg#flow-chart polyline") is not None


async def test_withheld_events_show_in_the_funnel_and_per_pixel(
        operator: AsyncTestClient, server: fakeredis.FakeServer,
        redis: fakeredis.FakeRedis) -> None:
    # Given the collector kept 4 events from Meta for want of consent (its own counter)
    withheld = WithheldCounter(Mock(), redis_adder(fakeredis.aioredis.FakeRedis(server=server)))
    for pixel in (PIXEL, PIXEL, PIXEL, OTHER_PIXEL):
        withheld.count(pixel, "Purchase", "no_consent")
    await withheld.flush()
    count(redis, {f"received:{PIXEL}:Purchase": 2, f"delivered:{PIXEL}:Purchase": 2})

    overview = soup((await operator.get("/")).text)
    pixels = soup((await operator.get("/pixels")).text)

    funnel = {r["data-step"]: cell_text(r.td) for r in overview.select("#funnel tr[data-step]")}
    by_pixel = {r["data-pixel"]: cell_text(r.select_one('td[data-col="withheld"]'))
                for r in overview.select("#by-pixel tbody tr[data-pixel]")}
    assert ("4", {PIXEL: "3", OTHER_PIXEL: "1"}) == (by_stat(str(overview))["withheld"],
                                                     by_pixel)
    # the whole funnel, in its order (the collector does not answer: refused is unknown)
    assert [("received", "2"), ("refused", "\u2013"), ("withheld", "4"), ("duplicate", "0"),
            ("waiting", "0"), ("dead", "0"), ("delivered", "2")] == list(funnel.items())
    assert ("3", "3", "1") == (
        cell_text(pixels.select_one(f"#withheld-{PIXEL} [data-stat=withheld]")),
        cell_text(pixels.select_one(
            f'#pixel-{PIXEL} tr[data-event="Purchase"] td[data-col="withheld"]')),
        cell_text(pixels.select_one(f"#withheld-{OTHER_PIXEL} [data-stat=withheld]")))


async def test_the_live_fragment_is_a_fragment_with_the_same_numbers(
        operator: AsyncTestClient, redis: fakeredis.FakeRedis) -> None:
    count(redis, {f"delivered:{PIXEL}:Lead": 4})

    answer = await operator.get("/fragments/overview?range=24h",
                                headers={"HX-Request": "true"})

    assert (200, None, "4") == (answer.status_code, soup(answer.text).find("html"),
                                by_stat(answer.text)["delivered"])


async def test_seven_days_are_read_from_hour_rollups(operator: AsyncTestClient,
                                                     redis: fakeredis.FakeRedis) -> None:
    three_days_ago = int(time.time() * 1000) - 3 * 86_400_000
    count(redis, {f"delivered:{PIXEL}:Purchase": 11}, three_days_ago)

    first = by_stat((await operator.get("/?range=7d")).text)["delivered"]
    hour = three_days_ago // 3_600_000
    rolled = redis.hget(keys.counters_hour(hour), f"delivered:{PIXEL}:Purchase")
    redis.delete(keys.counters(three_days_ago // 60_000))  # the minutes are no longer read
    second = by_stat((await operator.get("/?range=7d")).text)["delivered"]

    assert ("11", b"11", "11", "0") == (first, rolled, second,
                                        by_stat((await operator.get("/")).text)["delivered"])


async def test_an_unknown_range_is_a_400_with_a_sentence(operator: AsyncTestClient) -> None:
    answer = await operator.get("/?range=2y")

    assert (400, "range must be one of 1h, 24h, 7d, not '2y'") == (
        answer.status_code, cell_text(soup(answer.text).find(id="error-detail")))


async def test_latency_percentiles_come_from_the_histograms(
        operator: AsyncTestClient, redis: fakeredis.FakeRedis) -> None:
    now = int(time.time() * 1000)
    ledger = Ledger(redis, TTL_S)
    for _ in range(99):
        ledger.observe_batch(PIXEL, 150.0, [("Purchase", 400.0)], now)
    ledger.observe_batch(PIXEL, 3000.0, [("Purchase", 20_000.0)], now)

    page = soup((await operator.get("/")).text)

    rows = [[cell_text(c) for c in r.find_all(["th", "td"])]
            for r in page.select("#latency tbody tr")]
    assert ["receipt → Meta accepted", "376 ms", "490 ms", "500 ms", "100"] == rows[0]
    assert ["Meta request", "151 ms", "196 ms", "200 ms", "100"] == rows[1]


async def test_queues_workers_and_pixels_are_shown(operator: AsyncTestClient,
                                                   redis: fakeredis.FakeRedis) -> None:
    old = envelope("e9", received_ms=int(time.time() * 1000) - 120_000)
    redis.rpush(keys.inbox("relay_high", PIXEL), msgspec_encode(old))
    redis.sadd(keys.inbox_pixels("relay_high"), PIXEL)
    WorkerPresence(redis, "w1", ["relay_high"], 8).beat()
    PixelActivity(redis).failed(PIXEL, {"code": 190, "message": "Invalid OAuth access token",
                                        "fbtrace_id": "AbC123"}, int(time.time() * 1000))

    page = soup((await operator.get("/")).text)

    high = [cell_text(c) for c in page.select_one('#queues tr[data-queue="high"]').find_all(
        ["th", "td"])]
    assert ["high", "1", "0", "0", "0", "0"] == high[:6]
    assert high[6].endswith("min")
    assert "relay_high · 8 threads" in cell_text(page.select_one("#workers"))
    pixel = cell_text(page.select_one(f'#pixel-status li[data-pixel="{PIXEL}"]'))
    assert "code 190 Invalid OAuth access token (fbtrace_id AbC123)" in pixel


async def test_a_paused_pixel_shows_why_since_when_and_how_many_events_wait(
        operator: AsyncTestClient, redis: fakeredis.FakeRedis) -> None:
    # Given a pixel the breaker paused for a missing permission, two of its events waiting
    Breaker(redis, RelaySettings()).failed(PIXEL, "batch-1", PermanentError(
        "(#200) Permissions error", code=200))
    for n in (1, 2):
        redis.rpush(keys.inbox("relay_high", PIXEL), msgspec_encode(envelope(f"w{n}")))

    # Then the overview and the pixels page say so, and the other pixel is not paused
    overview = soup((await operator.get("/")).text)
    pixels = soup((await operator.get("/pixels")).text)

    paused = overview.select_one(f'#pixel-status li[data-pixel="{PIXEL}"] [data-pause]')
    assert paused is not None and "permission" == paused["data-pause"]
    text = cell_text(paused)
    assert text.startswith("delivery paused: permission missing (code 200) since ")
    assert text.endswith("ago) · 2 events waiting")
    assert overview.select_one(f'#pixel-status li[data-pixel="{OTHER_PIXEL}"] [data-pause]') \
        is None
    on_page = pixels.select_one(f"#pixel-{PIXEL} [data-pause]")
    assert on_page is not None  # the same words (the "ago" moves on between the two pages)
    assert re.sub(r"\(\S+ \S+ ago\)", "", text) == re.sub(
        r"\(\S+ \S+ ago\)", "", cell_text(on_page))


def msgspec_encode(env: object) -> bytes:

    return encode(env)  # type: ignore[arg-type]


# -- dead letters -------------------------------------------------------------------------------
def _rows(page: str) -> list[str]:
    return [r["data-key"] for r in soup(page).select("#dead-table tbody tr[data-key]")]


async def test_dead_letters_list_with_counts_per_reason(operator: AsyncTestClient,
                                                        redis: fakeredis.FakeRedis) -> None:
    add_dead_letter(redis, "e1")
    add_dead_letter(redis, "e2", reason={"kind": "expired", "message": "too old"})
    add_dead_letter(redis, "e3", pixel=OTHER_PIXEL, event_name="Lead")

    page = (await operator.get("/dead-letters")).text

    reasons = {el["data-reason"]: cell_text(el) for el in soup(page).select("[data-reason]")}
    assert ({"rejected:100": "2", "expired:none": "1"}, "3") == (
        reasons, cell_text(soup(page).find(id="dead-total")))
    assert 3 == len(_rows(page))


async def test_dead_letters_filter_by_pixel_event_kind_and_code(
        operator: AsyncTestClient, redis: fakeredis.FakeRedis) -> None:
    add_dead_letter(redis, "e1")
    add_dead_letter(redis, "e2", reason={"kind": "expired", "message": "too old"})
    k3 = add_dead_letter(redis, "e3", pixel=OTHER_PIXEL, event_name="Lead")

    by_pixel = _rows((await operator.get(f"/dead-letters?pixel={OTHER_PIXEL}")).text)
    both = _rows((await operator.get(
        "/dead-letters?kind=rejected&event=Lead&code=100")).text)
    none = _rows((await operator.get("/dead-letters?kind=rejected&code=190")).text)
    old = _rows((await operator.get("/dead-letters?age=older-24h")).text)

    assert ([k3], [k3], [], []) == (by_pixel, both, none, old)


async def test_dead_letters_page_with_a_cursor(operator: AsyncTestClient,
                                               redis: fakeredis.FakeRedis) -> None:
    for i in range(120):
        add_dead_letter(redis, f"e{i:03}")

    seen: list[str] = []
    path = "/dead-letters?kind=rejected"
    for _ in range(5):
        page = (await operator.get(path)).text
        seen += _rows(page)
        link = soup(page).find(id="next-page")
        if link is None:
            break
        path = link["href"]

    assert (120, 120) == (len(seen), len(set(seen)))


async def test_detail_shows_the_event_and_every_attempt(operator: AsyncTestClient,
                                                        redis: fakeredis.FakeRedis) -> None:
    key = add_dead_letter(redis, "e1")

    page = soup((await operator.get(f"/dead-letter?key={key}")).text)

    facts = dict(zip([cell_text(d) for d in page.select("#reason dt")],
                     [cell_text(d) for d in page.select("#reason dd")], strict=True))
    assert {"kind": "rejected", "Meta code": "100", "subcode": "2804001",
            "message": "Invalid parameter", "fbtrace_id": "trace-abc"} == facts
    attempt = [cell_text(c) for c in page.select("#attempts tbody tr")[0].find_all("td")]
    assert ["dead", "1", "100", "2804001", "Invalid parameter", "trace-abc"] == attempt[1:]
    assert '"event_id": "e1"' in page.find(id="event-json").get_text()


async def test_requeue_one_moves_it_back_to_the_inbox_and_is_audited(
        operator: AsyncTestClient, redis: fakeredis.FakeRedis) -> None:
    key = add_dead_letter(redis, "e1")
    redis.set(keys.dedup(key), "dead:batch-1")
    page = (await operator.get(f"/dead-letter?key={key}")).text

    answer = await operator.post("/dead-letters/act", data={
        "action": "requeue", "scope": "one", "key": key, "_csrf_token": csrf_of(page)})

    assert (200, 0, 1, None, "requeued") == (
        answer.status_code, redis.zcard(keys.dead_letters()),
        redis.llen(keys.inbox("relay_high", PIXEL)), redis.get(keys.dedup(key)),
        Ledger(redis, TTL_S).state(key))
    assert "1 of 1 requeued" == cell_text(soup(answer.text).find(id="done"))
    audit = soup((await operator.get("/audit")).text)
    first = [cell_text(c) for c in audit.select("#audit tbody tr")[0].find_all("td")]
    assert ["op operator", "requeue", "1"] == first[1:4]


async def test_requeue_and_discard_show_in_the_event_s_timeline_with_who_did_it(
        operator: AsyncTestClient, redis: fakeredis.FakeRedis) -> None:
    # Given a letter requeued from the dashboard, dead again, then discarded
    key = add_dead_letter(redis, "e1")
    token = csrf_of((await operator.get("/dead-letters")).text)
    await operator.post("/dead-letters/act", data={
        "action": "requeue", "scope": "one", "key": key, "_csrf_token": token})
    add_dead_letter(redis, "e1")
    await operator.post("/dead-letters/act", data={
        "action": "discard", "keys": key, "_csrf_token": token})  # one box ticked

    timeline = soup((await operator.get("/find?q=e1")).text).find(id="timeline").get_text()

    steps = [line.split("  ", 2)[-1] for line in timeline.splitlines()[2:]]
    assert ["dead  (attempt=1, kind=rejected, message=Invalid parameter, code=100, "
            "subcode=2804001, fbtrace_id=trace-abc)",
            "requeued  (by=op, via=dashboard)",
            "dead  (attempt=1, kind=rejected, message=Invalid parameter, code=100, "
            "subcode=2804001, fbtrace_id=trace-abc)",
            "discarded  (by=op, via=dashboard)"] == steps


async def test_requeue_twice_moves_it_once(operator: AsyncTestClient,
                                           redis: fakeredis.FakeRedis) -> None:
    key = add_dead_letter(redis, "e1")
    token = csrf_of((await operator.get("/dead-letters")).text)

    for _ in range(2):
        last = await operator.post("/dead-letters/act", data={
            "action": "requeue", "scope": "one", "key": key, "_csrf_token": token})

    assert (1, "0 of 1 requeued") == (redis.llen(keys.inbox("relay_high", PIXEL)),
                                      cell_text(soup(last.text).find(id="done")))


async def test_discard_selected(operator: AsyncTestClient, redis: fakeredis.FakeRedis) -> None:
    k1, k2 = add_dead_letter(redis, "e1"), add_dead_letter(redis, "e2")
    add_dead_letter(redis, "e3")
    token = csrf_of((await operator.get("/dead-letters")).text)

    answer = await operator.post("/dead-letters/act", data={
        "action": "discard", "keys": [k1, k2], "_csrf_token": token})

    assert (1, 0, {"rejected:100": 1}) == (
        redis.zcard(keys.dead_letters()), redis.llen(keys.inbox("relay_high", PIXEL)),
        DeadLetters(redis, TTL_S).reasons())
    assert "2 of 2 discarded" == cell_text(soup(answer.text).find(id="done"))


async def test_requeue_selected_and_discard_every_match(
        operator: AsyncTestClient, redis: fakeredis.FakeRedis) -> None:
    chosen = [add_dead_letter(redis, f"e{i}") for i in range(3)]
    expired = [add_dead_letter(redis, f"x{i}", reason={"kind": "expired", "message": "old"})
               for i in range(4)]
    token = csrf_of((await operator.get("/dead-letters")).text)

    requeued = await operator.post("/dead-letters/act", data={
        "action": "requeue", "keys": chosen[:2], "_csrf_token": token})
    job = await operator.post("/dead-letters/act", data={
        "action": "discard-matching", "kind": "expired", "_csrf_token": token},
        follow_redirects=False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        card = soup((await operator.get(f"/fragments{job.headers['location']}")).text)
        if card.find(id="job-card")["data-state"] != "running":
            break

    assert ("2 of 2 requeued", "done", "4") == (
        cell_text(soup(requeued.text).find(id="done")), card.find(id="job-card")["data-state"],
        cell_text(card.find(id="job-done")))
    assert ([chosen[2].encode()], 2, [None] * 4) == (
        redis.zrange(keys.dead_letters(), 0, -1), redis.llen(keys.inbox(QUEUE, PIXEL)),
        [DeadLetters(redis, TTL_S).get(k) for k in expired])


async def test_requeue_every_match_runs_as_a_job_with_progress(
        operator: AsyncTestClient, redis: fakeredis.FakeRedis) -> None:
    for i in range(30):
        add_dead_letter(redis, f"e{i}")
    kept = add_dead_letter(redis, "x1", reason={"kind": "expired", "message": "too old"})
    token = csrf_of((await operator.get("/dead-letters?kind=rejected")).text)

    answer = await operator.post("/dead-letters/act", data={
        "action": "requeue-matching", "kind": "rejected", "_csrf_token": token},
        follow_redirects=False)
    job_path = answer.headers["location"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        fragment = soup((await operator.get(f"/fragments{job_path}")).text)
        if fragment.find(id="job-card")["data-state"] != "running":
            break

    assert ("done", "30", "30") == (fragment.find(id="job-card")["data-state"],
                                    cell_text(fragment.find(id="job-done")),
                                    cell_text(fragment.find(id="job-total")))
    assert ([kept.encode()], 30) == (redis.zrange(keys.dead_letters(), 0, -1),
                                     redis.llen(keys.inbox("relay_high", PIXEL)))


async def test_a_bad_filter_is_a_400(operator: AsyncTestClient) -> None:
    answer = await operator.get("/dead-letters?age=forever")

    assert 400 == answer.status_code
    assert "age must be one of" in cell_text(soup(answer.text).find(id="error-detail"))


# -- find, links, pixels ------------------------------------------------------------------------
async def test_find_shows_the_trace_timeline(operator: AsyncTestClient,
                                             redis: fakeredis.FakeRedis) -> None:
    add_dead_letter(redis, "order-7")

    page = soup((await operator.get("/find?q=order-7")).text)

    timeline = page.find(id="timeline").get_text()
    assert timeline.startswith(f"Purchase order-7 for pixel {PIXEL}: dead")


async def test_find_unknown_says_so(operator: AsyncTestClient) -> None:
    page = soup((await operator.get("/find?q=nothing-here")).text)

    assert page.find(id="not-found") is not None


async def test_pixels_page_shows_match_key_coverage(operator: AsyncTestClient,
                                                    redis: fakeredis.FakeRedis) -> None:
    count(redis, {f"delivered:{PIXEL}:Purchase": 4, f"mk.em:{PIXEL}:Purchase": 4,
                  f"mk.ph:{PIXEL}:Purchase": 1, f"mk.fbc:{PIXEL}:Purchase": 2,
                  f"received:{PIXEL}:Purchase": 5, f"dead:{PIXEL}:Purchase": 1})

    page = soup((await operator.get("/pixels")).text)

    row = page.select_one(f'#pixel-{PIXEL} tr[data-event="Purchase"]')
    cells = {c["data-col"]: cell_text(c) for c in row.select("td[data-col]")}
    assert {"received": "5", "delivered": "4", "dead": "1", "success": "80.0 %",
            "withheld": "0", "em": "100 %", "ph": "25 %", "fbc": "50 %", "fbp": "0 %",
            "external_id": "0 %", "client_ip_address": "0 %", "client_user_agent": "0 %"} == cells


async def test_links_page_counts_clicks_and_conversions(operator: AsyncTestClient,
                                                        redis: fakeredis.FakeRedis) -> None:
    count(redis, {"lk.click:summer:PageView": 9, "lk.conv:summer:Purchase": 2,
                  f"delivered:{PIXEL}:PageView": 9})

    page = soup((await operator.get("/links")).text)

    row = page.select_one('#links tr[data-link="summer"]')
    cells = {c["data-col"]: cell_text(c) for c in row.select("td[data-col]")}
    assert {"clicks": "9", "conversions": "Purchase 2", "success": "100.0 %"} == cells


async def test_find_knows_an_event_the_collector_only_accepted_so_far(
        operator: AsyncTestClient, redis: fakeredis.FakeRedis) -> None:
    accept(redis, envelope("acc-1", event_name="Lead"))

    timeline = soup((await operator.get("/find?q=acc-1")).text).find(id="timeline").get_text()

    assert [f"Lead acc-1 for pixel {PIXEL}: waiting", "accepted by the collector"] == [
        timeline.splitlines()[0], timeline.splitlines()[1].split("  ")[-1]]


async def test_find_by_click_id_shows_the_click_its_page_view_and_the_later_events(
        operator: AsyncTestClient, redis: fakeredis.FakeRedis) -> None:
    now = int(time.time() * 1000)
    click = ClickContext(click_id=new_click_id(now), slug="summer", time_ms=now, fbc="fb.1.1.x",
                         client_user_agent="Mozilla/5.0")
    page_view = msgspec.structs.replace(
        envelope(click.click_id, event_name="PageView", click_id=click.click_id),
        source="redirect")
    purchase = envelope("order-8", click_id=click.click_id)
    store_sync(redis, [ClickWrite(click.click_id, 86_400, encode_click(click)),
                       *(EventWrite("relay_low", PIXEL, e.dedup_key, now, pack_envelope(e))
                         for e in (page_view, purchase))], 86_400)
    pipe = redis.pipeline()
    Clicks.note_later(pipe, click.click_id, purchase.dedup_key, 86_400)
    pipe.execute()

    page = soup((await operator.get(f"/find?q={click.click_id}")).text)

    carried = {t.get_text(strip=True) for t in page.select("#click .tag.good")}
    assert ("summer", {"fbc yes", "user agent yes"}) == (
        cell_text(page.select_one("#click dd a")), carried)
    assert page.find(id="timeline").get_text().startswith(
        f"PageView {click.click_id} for pixel {PIXEL}: waiting")
    assert [f"Purchase order-8 for pixel {PIXEL}: waiting"] == [
        p.get_text().splitlines()[0] for p in page.select("pre.click-event")]


async def test_collector_state_shows_spooling_bots_and_refusals(
        operator: AsyncTestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = "\n".join([
        "# TYPE pixelrelay_collector_spooling gauge",
        'pixelrelay_collector_spooling{worker="1"} 1.0',
        'pixelrelay_collector_bot_clicks_total{slug="summer"} 7.0',
        'pixelrelay_collector_requests_total{route="/v1/events",status="400"} 3.0',
        'pixelrelay_collector_requests_total{route="/v1/events",status="422"} 2.0',
        'pixelrelay_collector_requests_total{route="/v1/events",status="202"} 90.0'])
    asked = []

    def collector(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, text=metrics)

    monkeypatch.setattr(operator.app.state.ctx, "http",
                        httpx.Client(transport=httpx.MockTransport(collector)))

    page = soup((await operator.get("/")).text)

    funnel = {r["data-step"]: cell_text(r.td) for r in page.select("#funnel tr[data-step]")}
    collector_line = cell_text(page.select("#workers li")[-1])
    assert (["http://127.0.0.1:9/metrics"], "5") == (asked, funnel["refused"])
    assert collector_line.startswith("spooling to disk collector · 7 bot requests filtered")


async def test_htmx_is_the_pinned_copy_served_by_the_dashboard_itself(
        operator: AsyncTestClient) -> None:
    recorded = (ROOT / "dashboard/static/htmx.min.js.txt").read_text()
    pinned = re.search(r"^sha256:\s+([0-9a-f]{64})", recorded, re.MULTILINE)
    page = soup((await operator.get("/")).text)

    served = await operator.get("/static/htmx.min.js")

    scripts = [s["src"] for s in page.find_all("script")]
    assert ("/static/htmx.min.js" in scripts, True, pinned.group(1) if pinned else None) == (
        True, all(src.startswith("/static/") for src in scripts),
        hashlib.sha256(served.content).hexdigest())
    assert "version:  2.0.11" in recorded


async def test_the_live_overview_polls_every_2_s_and_pauses_when_hidden(
        operator: AsyncTestClient) -> None:
    live = soup((await operator.get("/")).text).find(id="live")
    script = (ROOT / "dashboard/static/dashboard.js").read_text()

    assert ("/fragments/overview?range=1h", "every 2s, refresh", True) == (
        live["hx-get"], live["hx-trigger"], live.has_attr("data-poll"))
    # dashboard.js cancels a data-poll request while the tab is hidden (the browser test
    # watches it happen)
    assert 'hasAttribute("data-poll") && document.visibilityState !== "visible"' in script


@pytest.mark.parametrize("path", ["/", "/dead-letters", "/find?q=e1", "/links", "/pixels",
                                  "/audit", "/dead-letter?key=" + f"{PIXEL}:Purchase:e1"])
async def test_every_form_control_has_a_label_and_the_page_its_landmarks(
        operator: AsyncTestClient, redis: fakeredis.FakeRedis, path: str) -> None:
    add_dead_letter(redis, "e1")
    page = soup((await operator.get(path)).text)

    labelled = {label.get("for") for label in page.find_all("label")}
    unlabelled = [str(c)[:80] for c in page.find_all(["input", "select", "textarea"])
                  if c.get("type") not in ("hidden", "submit", "button")
                  and c.get("id") not in labelled and not c.get("aria-label")
                  and c.find_parent("label") is None]
    assert ([], True, True, 1) == (unlabelled, page.find("main") is not None,
                                   page.find("nav") is not None, len(page.find_all("h1")))

"""relay.breaker with the Deliverer: pause a failing pixel, hold its batches, probe, resume."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import dramatiq
import fakeredis
import httpx
import pytest
import structlog

from relay import keys
from relay.breaker import Breaker, pause_status, token_fingerprint
from relay.config import Settings, settings_from_mapping
from relay.deadletters import DeadLetters
from relay.dedup import Claim, Dedup
from relay.delivery import Attempt, Deliverer, Paused
from relay.errors import PermanentError, TransientError
from relay.events import Envelope, decode_envelope, encode
from relay.inbox import Batcher, EventWrite, store_sync
from relay.meta_client import MetaClient
from relay.observe import gauge_values, relay_state
from relay.queues import queue_for
from tests.relay.factories import (
    PIXEL,
    TOKEN,
    TOKEN_ENV,
    FakeGraph,
    encoded,
    envelope,
    graph_error,
    make_settings,
)

OTHER = "2234567890"
QUEUE = "relay_high"  # Purchase, the factories' event
DOWN = httpx.Response(503, json=graph_error(2, message="Service temporarily unavailable",
                                            is_transient=True))
REVOKED = httpx.Response(401, json=graph_error(190, message="Error validating access token"))


class Clock:
    """Wall-clock seconds that move only when told."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    @property
    def ms(self) -> int:
        return int(self.now * 1000)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def graph() -> FakeGraph:
    return FakeGraph()


def settings(token: str = TOKEN) -> Settings:
    """Two pixels sharing one token, as an agency with one app would have them."""
    raw_pixels = [{"id": PIXEL, "access_token_env": TOKEN_ENV},
                  {"id": OTHER, "access_token_env": TOKEN_ENV}]
    return settings_from_mapping({"meta": {"graph_url": "https://graph.test"},
                                  "pixels": raw_pixels}, {TOKEN_ENV: token})


def deliverer(redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock,
              token: str = TOKEN) -> Deliverer:
    s = settings(token)
    return Deliverer(s, redis, MetaClient(s.meta, graph.transport()), clock=clock,
                     sleep=lambda _: None)


def down_for(*pixels: str) -> Any:
    return lambda request, data: DOWN if any(f"/{p}/" in request.url.path for p in pixels) \
        else None


def trip(d: Deliverer, graph: FakeGraph) -> list[Envelope]:
    """Three batches of the pixel fail transiently: the third pauses it. Returns its events."""
    graph.respond = down_for(PIXEL)
    for n in (1, 2):
        with pytest.raises(TransientError):
            d.deliver(PIXEL, encoded(envelope(f"b{n}")), Attempt(f"batch-{n}", 1, last=False))
    third = [envelope("b3-1"), envelope("b3-2")]
    assert isinstance(d.deliver(PIXEL, encoded(*third), Attempt("batch-3", 1, last=False)),
                      Paused)
    return third


def inbox(redis: fakeredis.FakeRedis, pixel: str = PIXEL) -> list[str]:
    return [decode_envelope(raw).event.event_id or ""
            for raw in redis.lrange(keys.inbox(QUEUE, pixel), 0, -1)]


def store(redis: fakeredis.FakeRedis, envelopes: list[Envelope]) -> None:
    writes = [EventWrite(queue_for(e.event.event_name, make_settings().relay), e.pixel_id,
                         e.dedup_key, e.received_ms, encode(e)) for e in envelopes]
    store_sync(redis, writes, 3600)


def cut(redis: fakeredis.FakeRedis, clock: Clock, max_batch: int = 1000
        ) -> list[dramatiq.Message[Any]]:
    """Run the batch script once at the clock's time; pop the messages it made."""
    Batcher(redis, QUEUE, "deliver_high", max_batch, 16).run_once(now_ms=clock.ms)
    made = []
    while (mid := redis.lpop(keys.dramatiq_queue(QUEUE))) is not None:
        raw = redis.hget(f"{keys.dramatiq_queue(QUEUE)}.msgs", mid)
        made.append(dramatiq.Message.decode(raw))
    return made


# -- telling the batch from Meta ------------------------------------------------------------------
def test_one_batch_failing_alone_is_retried_and_pauses_nothing(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    graph.respond = down_for(PIXEL)
    d = deliverer(redis, graph, clock)
    batch = encoded(envelope("e1"))

    for number in range(1, 6):
        with pytest.raises(TransientError):
            d.deliver(PIXEL, batch, Attempt("batch-1", number, last=False))
        clock.advance(2)

    assert (False, 5) == (pause_status(redis, [PIXEL])[PIXEL].paused, len(graph.requests))


def test_transient_failures_of_several_batches_pause_the_pixel(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    d = deliverer(redis, graph, clock)

    third = trip(d, graph)

    status = pause_status(redis, [PIXEL])[PIXEL]
    assert (True, "meta", clock.ms, 2, 2) == (status.paused, status.reason, status.since_ms,
                                              status.code, status.waiting)
    # The tripping batch spent no attempt: its events wait at the head of the inbox, unclaimed.
    assert [e.event.event_id for e in third] == inbox(redis)
    assert [Claim.CLAIMED, Claim.CLAIMED] == Dedup(redis, 3600).claim(
        "the-next-batch", [e.dedup_key for e in third])
    assert ("deferred", "paused") == (d.ledger.state(third[0].dedup_key),
                                      d.ledger.life(third[0].dedup_key)[-1]["outcome"])


def test_failures_among_successes_do_not_pause(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    d = deliverer(redis, graph, clock)
    failing = {"f1", "f2", "f3"}
    graph.respond = lambda request, data: DOWN if data[0]["event_id"] in failing else None

    for n, event_id in enumerate(["f1", "ok1", "ok2", "f2", "ok3", "ok4", "f3"]):
        with contextlib.suppress(TransientError):
            d.deliver(PIXEL, encoded(envelope(event_id)), Attempt(f"b{n}", 1, last=False))

    assert not pause_status(redis, [PIXEL])[PIXEL].paused


def test_failures_older_than_the_window_do_not_count(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    d = deliverer(redis, graph, clock)
    graph.respond = down_for(PIXEL)

    for n in range(3):
        with pytest.raises(TransientError):
            d.deliver(PIXEL, encoded(envelope(f"e{n}")), Attempt(f"b{n}", 1, last=False))
        clock.advance(31)  # relay.pause_window_s is 30

    assert not pause_status(redis, [PIXEL])[PIXEL].paused


# -- while paused ---------------------------------------------------------------------------------
def test_a_paused_pixels_batch_is_held_without_a_request_or_an_attempt(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    d = deliverer(redis, graph, clock)
    trip(d, graph)
    sent = len(graph.requests)
    late = envelope("late")

    # Given: the last attempt of a batch retried before the pause
    outcome = d.deliver(PIXEL, encoded(late), Attempt("batch-9", 10, last=True))

    assert (Paused("meta", 1), sent) == (outcome, len(graph.requests))
    assert "late" == inbox(redis)[0]
    assert [] == DeadLetters(redis, 3600).list(0, 10), "never retries_exhausted while paused"


def test_a_failure_in_flight_when_the_pixel_paused_spends_no_attempt_even_the_last(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    d = deliverer(redis, graph, clock)
    trip(d, graph)
    gate = d.breaker.admit  # the batch was admitted just before the pause
    d.breaker.admit = lambda pixel_id, batch_id: gate(OTHER, batch_id)  # type: ignore[method-assign]

    outcome = d.deliver(PIXEL, encoded(envelope("inflight")), Attempt("batch-8", 10, last=True))

    assert isinstance(outcome, Paused)
    assert [] == DeadLetters(redis, 3600).list(0, 10)


def test_other_pixels_flow_while_one_is_paused(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    d = deliverer(redis, graph, clock)
    trip(d, graph)

    outcome = d.deliver(OTHER, encoded(envelope("o1", pixel_id=OTHER)),
                        Attempt("other-1", 1, last=False))

    assert (None, ["o1"]) == (outcome, graph.accepted)
    assert not pause_status(redis, [OTHER])[OTHER].paused


def test_the_inbox_of_a_paused_pixel_is_cut_only_for_its_probe(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    d = deliverer(redis, graph, clock)
    trip(d, graph)
    store(redis, [envelope(f"n{i}") for i in range(5)])
    store(redis, [envelope("o1", pixel_id=OTHER)])

    assert [OTHER] == [m.args[0] for m in cut(redis, clock)], "probe not due yet"
    clock.advance(1)  # relay.probe_min_ms
    probes = cut(redis, clock)
    clock.advance(1)
    again = cut(redis, clock)

    assert ([PIXEL], 7, []) == ([m.args[0] for m in probes], len(probes[0].args[1]), again)


# -- probing and resuming -------------------------------------------------------------------------
def probe(d: Deliverer, redis: fakeredis.FakeRedis, clock: Clock, max_batch: int = 1000) -> Any:
    """Let the next probe be cut and delivered; return the Deliverer's outcome."""
    due = pause_status(redis, [PIXEL])[PIXEL].next_probe_ms
    clock.advance(max(0, due - clock.ms) / 1000)
    [message] = cut(redis, clock, max_batch)
    return d.deliver(PIXEL, message.args[1], Attempt(message.message_id, 1, last=False))


def test_failed_probes_back_off_up_to_the_cap(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    d = deliverer(redis, graph, clock)
    trip(d, graph)
    waits = []

    for _ in range(6):
        assert isinstance(probe(d, redis, clock), Paused)
        waits.append(pause_status(redis, [PIXEL])[PIXEL].next_probe_ms - clock.ms)

    # The first wait was probe_min_ms (1 s); each failure doubles it, up to probe_max_ms (3 s).
    assert [2000, 3000, 3000, 3000, 3000, 3000] == waits


def test_failed_probes_leave_no_ledger_entry_per_probe(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    d = deliverer(redis, graph, clock)
    third = trip(d, graph)
    entries = len(d.ledger.life(third[0].dedup_key))

    for _ in range(3):
        probe(d, redis, clock)

    assert entries == len(d.ledger.life(third[0].dedup_key))
    assert 3 == pause_status(redis, [PIXEL])[PIXEL].probes


def test_a_successful_probe_resumes_and_the_backlog_leaves_in_full_batches(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    d = deliverer(redis, graph, clock)
    third = trip(d, graph)
    backlog = [envelope(f"n{i}") for i in range(210)]
    store(redis, backlog)
    probe(d, redis, clock, max_batch=100)  # Meta still down

    graph.respond = None  # Meta is back
    assert probe(d, redis, clock, max_batch=100) is None

    assert not pause_status(redis, [PIXEL])[PIXEL].paused  # the probe took the oldest 100
    batches = cut(redis, clock, max_batch=100)
    for message in batches:
        assert d.deliver(PIXEL, message.args[1], Attempt(message.message_id, 1, False)) is None
    expected = [e.event.event_id for e in [*third, *backlog]]
    assert (sorted(expected), [100, 12]) == (
        sorted(graph.accepted), [len(m.args[1]) for m in batches])
    assert expected[:100] == graph.accepted[:100], "oldest first"
    assert 0 == pause_status(redis, [PIXEL])[PIXEL].waiting


def test_a_probe_with_nothing_left_to_send_makes_the_next_probe_due_now(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    d = deliverer(redis, graph, clock)
    trip(d, graph)
    redis.delete(keys.inbox(QUEUE, PIXEL))
    old = clock.now - 8 * 86_400
    store(redis, [envelope("too-old", event_time=int(old))])
    sent = len(graph.requests)

    assert probe(d, redis, clock) is None

    status = pause_status(redis, [PIXEL])[PIXEL]
    assert (True, clock.ms, sent) == (status.paused, status.next_probe_ms, len(graph.requests))
    assert "expired" == DeadLetters(redis, 3600).list(0, 10)[0].reason["kind"]


# -- the token -------------------------------------------------------------------------------------
def test_an_invalid_token_pauses_at_once_and_the_events_wait(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    graph.respond = lambda request, data: REVOKED
    d = deliverer(redis, graph, clock)
    envs = [envelope("t1"), envelope("t2")]

    outcome = d.deliver(PIXEL, encoded(*envs), Attempt("batch-1", 1, last=False))

    status = pause_status(redis, [PIXEL])[PIXEL]
    assert (Paused("token", 2), 1) == (outcome, len(graph.requests))
    assert (True, "token", 190, "Error validating access token", 2) == (
        status.paused, status.reason, status.code, status.message, status.waiting)
    assert [] == DeadLetters(redis, 3600).list(0, 10)
    assert TOKEN not in str(redis.hgetall(keys.breaker(PIXEL)))


def test_token_probes_back_off_up_to_five_seconds(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    graph.respond = lambda request, data: REVOKED
    d = deliverer(redis, graph, clock)
    d.deliver(PIXEL, encoded(envelope("t1")), Attempt("batch-1", 1, last=False))

    for _ in range(8):
        probe(d, redis, clock)

    assert 5_000 == pause_status(redis, [PIXEL])[PIXEL].next_probe_ms - clock.ms


def test_a_successful_token_check_resumes_a_token_pause(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    graph.respond = lambda request, data: REVOKED
    d = deliverer(redis, graph, clock)
    d.deliver(PIXEL, encoded(envelope("t1")), Attempt("batch-1", 1, last=False))

    verdict = d.breaker.checked(PIXEL, None)

    assert ("resumed", False) == (verdict.name if verdict else None,
                                  pause_status(redis, [PIXEL])[PIXEL].paused)


def test_a_successful_token_check_does_not_end_a_pause_for_meta(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    d = deliverer(redis, graph, clock)
    trip(d, graph)

    d.breaker.checked(PIXEL, None)

    assert pause_status(redis, [PIXEL])[PIXEL].paused


def test_a_failing_token_check_pauses_before_any_batch_fails(
        redis: fakeredis.FakeRedis, clock: Clock) -> None:
    breaker = Breaker(redis, make_settings().relay, clock)

    breaker.checked(PIXEL, PermanentError("Error validating access token", code=190), TOKEN)

    assert "token" == pause_status(redis, [PIXEL])[PIXEL].reason
    assert token_fingerprint(TOKEN) == redis.hget(keys.breaker(PIXEL), "token_fp").decode()


def test_a_worker_with_a_new_token_probes_at_once(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    graph.respond = lambda request, data: REVOKED
    old = deliverer(redis, graph, clock, token="old-token")
    old.deliver(PIXEL, encoded(envelope("t1")), Attempt("batch-1", 1, last=False))
    assert not old.breaker.token_seen(PIXEL, "old-token"), "same token: wait for the probe"

    graph.respond = None
    new = deliverer(redis, graph, clock, token="new-token")
    assert new.breaker.token_seen(PIXEL, "new-token")
    [message] = cut(redis, clock)  # due now, without the clock moving

    assert new.deliver(PIXEL, message.args[1], Attempt(message.message_id, 1, False)) is None
    assert (["t1"], False) == (graph.accepted, pause_status(redis, [PIXEL])[PIXEL].paused)


# -- permissions ---------------------------------------------------------------------------------
def missing_permission(code: int) -> httpx.Response:
    return httpx.Response(403, json=graph_error(
        code, message="(#200) Permissions error", fbtrace_id="T-perm"))


@pytest.mark.parametrize("code", [10, 200, 299])
def test_a_missing_permission_pauses_at_once_and_the_events_wait(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock, code: int) -> None:
    graph.respond = lambda request, data: missing_permission(code)
    d = deliverer(redis, graph, clock)
    envs = [envelope("p1"), envelope("p2")]

    outcome = d.deliver(PIXEL, encoded(*envs), Attempt("batch-1", 1, last=False))

    status = pause_status(redis, [PIXEL])[PIXEL]
    assert (Paused("permission", 2), 1) == (outcome, len(graph.requests))
    assert (True, "permission", code, 2) == (status.paused, status.reason, status.code,
                                             status.waiting)
    assert [] == DeadLetters(redis, 3600).list(0, 10)
    assert ["p1", "p2"] == inbox(redis)


def test_a_permission_pause_probes_up_to_five_seconds_apart_and_resumes_once_granted(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    graph.respond = lambda request, data: missing_permission(200)
    d = deliverer(redis, graph, clock)
    d.deliver(PIXEL, encoded(envelope("p1")), Attempt("batch-1", 1, last=False))
    for _ in range(8):
        probe(d, redis, clock)
    wait_ms = pause_status(redis, [PIXEL])[PIXEL].next_probe_ms - clock.ms

    graph.respond = None  # the permission is granted at Meta
    outcome = probe(d, redis, clock)

    assert (5_000, None, ["p1"]) == (wait_ms, outcome, graph.accepted)
    assert not pause_status(redis, [PIXEL])[PIXEL].paused
    assert [] == DeadLetters(redis, 3600).list(0, 10)


def test_a_successful_token_check_does_not_end_a_permission_pause(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    graph.respond = lambda request, data: missing_permission(10)
    d = deliverer(redis, graph, clock)
    d.deliver(PIXEL, encoded(envelope("p1")), Attempt("batch-1", 1, last=False))

    d.breaker.checked(PIXEL, None)  # reading the pixel may be allowed where sending is not

    assert "permission" == pause_status(redis, [PIXEL])[PIXEL].reason


def test_a_worker_with_a_new_token_probes_a_permission_pause_at_once(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    graph.respond = lambda request, data: missing_permission(200)
    old = deliverer(redis, graph, clock, token="old-token")
    old.deliver(PIXEL, encoded(envelope("p1")), Attempt("batch-1", 1, last=False))

    assert old.breaker.token_seen(PIXEL, "new-token")
    assert clock.ms == pause_status(redis, [PIXEL])[PIXEL].next_probe_ms


def test_a_permission_error_in_a_meta_pause_names_the_permission(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    d = deliverer(redis, graph, clock)
    trip(d, graph)

    graph.respond = lambda request, data: missing_permission(200)
    probe(d, redis, clock)

    assert ("permission", 200) == (pause_status(redis, [PIXEL])[PIXEL].reason,
                                   pause_status(redis, [PIXEL])[PIXEL].code)


# -- resuming fast ---------------------------------------------------------------------------------
def test_a_probe_resumes_its_pixel_before_its_own_bookkeeping_and_says_so(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    # Given a paused pixel, a Deliverer telling the worker when a pixel resumes
    resumed: list[tuple[str, bool]] = []
    s = settings()

    def on_resume(pixel_id: str) -> None:
        # what the ledger says of the probe's events at that moment
        resumed.append((pixel_id, d.ledger.state(third[0].dedup_key) == "delivered"))

    d = Deliverer(s, redis, MetaClient(s.meta, graph.transport()), clock=clock,
                  sleep=lambda _: None, on_resume=on_resume)
    third = trip(d, graph)
    graph.respond = None

    # When the probe is accepted
    assert probe(d, redis, clock) is None

    # Then the worker heard of it once, before the probe's events were recorded delivered
    assert [(PIXEL, False)] == resumed
    assert "delivered" == d.ledger.state(third[0].dedup_key)


def test_pausing_and_resuming_are_logged_with_reason_and_duration(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    d = deliverer(redis, graph, clock)
    with structlog.testing.capture_logs() as logs:
        trip(d, graph)
        clock.advance(20)
        graph.respond = None
        probe(d, redis, clock)

    [paused] = [e for e in logs if e["event"] == "pixel_paused"]
    [resumed] = [e for e in logs if e["event"] == "pixel_resumed"]
    assert (PIXEL, "meta", 2) == (paused["pixel_id"], paused["reason"], paused["code"])
    assert (PIXEL, "meta", 1) == (resumed["pixel_id"], resumed["reason"],
                                  round(resumed["paused_s"] / 20))
    assert "warning" == paused["log_level"] == resumed["log_level"]


# -- reading ---------------------------------------------------------------------------------------
def test_pause_status_of_a_flowing_pixel_counts_its_waiting_events(
        redis: fakeredis.FakeRedis) -> None:
    store(redis, [envelope("w1"), envelope("w2", event_name="PageView")])

    status = pause_status(redis, [PIXEL])[PIXEL]

    assert {"pixel_id": PIXEL, "paused": False, "reason": "", "since_ms": 0, "waiting": 2,
            "code": None, "message": "", "probes": 0, "next_probe_ms": 0} == status.as_dict()


def test_the_observer_gauges_show_pause_reason_since_and_waiting(
        redis: fakeredis.FakeRedis, graph: FakeGraph, clock: Clock) -> None:
    d = deliverer(redis, graph, clock)
    trip(d, graph)
    paused_at = clock.now
    clock.advance(12)

    values = {name: dict(rows) for name, rows in
              gauge_values(relay_state(redis, settings(), clock.ms)).items()}

    assert {(PIXEL, "meta"): 1.0, (OTHER, ""): 0.0} == values["pixelrelay_relay_pixel_paused"]
    assert {(PIXEL,): paused_at} == values["pixelrelay_relay_pixel_paused_since_timestamp_seconds"]
    assert {(PIXEL,): 2.0, (OTHER,): 0.0} == values["pixelrelay_relay_pixel_waiting_events"]

"""relay.ledger: each event's life and state, the index by event_id, per-minute counters."""

from __future__ import annotations

import time
from collections import Counter

import fakeredis
import msgspec
import pytest

from relay import keys
from relay.deadletters import DeadLetters
from relay.inbox import EventWrite, store_sync
from relay.ledger import Actor, Entry, Ledger, bucket_for, minute_of
from tests.relay.factories import envelope

TTL_S = 7 * 86_400
AT_MS = int(time.time() * 1000)  # records are read for the ledger TTL back from now


def entry(state: str, event_id: str = "e1", pixel: str = "111", **detail: object) -> Entry:
    return Entry(f"{pixel}:Purchase:{event_id}", event_id, pixel, "Purchase",
                 state, dict(detail))  # type: ignore[arg-type]


def test_life_lists_entries_in_order(redis: fakeredis.FakeRedis) -> None:
    ledger = Ledger(redis, TTL_S)
    ledger.record([entry("attempt", code=2)], AT_MS)
    ledger.record([entry("delivered", fbtrace_id="T")], AT_MS + 5)

    assert [{"at_ms": AT_MS, "state": "attempt", "pixel_id": "111", "code": 2},
            {"at_ms": AT_MS + 5, "state": "delivered", "pixel_id": "111", "fbtrace_id": "T"}
            ] == ledger.life("111:Purchase:e1")


def test_state_is_the_latest_state(redis: fakeredis.FakeRedis) -> None:
    ledger = Ledger(redis, TTL_S)
    ledger.record([entry("deferred")], AT_MS)
    ledger.record([entry("delivered")], AT_MS)

    assert "delivered" == ledger.state("111:Purchase:e1")


def test_attempt_does_not_change_the_state(redis: fakeredis.FakeRedis) -> None:
    ledger = Ledger(redis, TTL_S)
    ledger.record([entry("deferred")], AT_MS)
    ledger.record([entry("attempt")], AT_MS)

    assert "deferred" == ledger.state("111:Purchase:e1")


def test_unknown_event_has_no_state(redis: fakeredis.FakeRedis) -> None:
    assert None is Ledger(redis, TTL_S).state("111:Purchase:nope")


def test_event_id_index_finds_every_pixel(redis: fakeredis.FakeRedis) -> None:
    ledger = Ledger(redis, TTL_S)
    ledger.record([entry("delivered", pixel="222"), entry("dead", pixel="111"),
                   entry("delivered", event_id="other")], AT_MS)

    assert ["111:Purchase:e1", "222:Purchase:e1"] == ledger.keys_for_event("e1")


def stored(redis: fakeredis.FakeRedis, pixel: str, event_name: str, event_id: str,
           received_ms: int = AT_MS) -> str:
    """What the collector's STORE does for one event (its record, the ledger's names)."""
    dedup_key = f"{pixel}:{event_name}:{event_id}"
    store_sync(redis, [EventWrite("relay_high", pixel, dedup_key, received_ms, b"-")], TTL_S)
    return dedup_key


class NoSearch(fakeredis.FakeRedis):
    """A client on which any KEYS or SCAN-family command fails the test."""

    def execute_command(self, *args: object, **options: object) -> object:
        assert str(args[0]).upper() not in {"KEYS", "SCAN", "HSCAN", "SSCAN", "ZSCAN"}, args
        return super().execute_command(*args, **options)


def test_copies_of_an_event_id_are_read_without_searching() -> None:
    redis = NoSearch()
    # Given copies for two pixels and two names, received on two days, and other events
    found = [stored(redis, "111", "Purchase", "e1"),
             stored(redis, "222", "Lead", "e1", AT_MS - 3 * 86_400_000),
             stored(redis, "222", "Purchase", "e1")]
    stored(redis, "111", "Purchase", "e2")
    stored(redis, "111", "Lead", "e3")

    assert sorted(found) == Ledger(redis, TTL_S).copies("e1")


def test_copies_ignore_names_not_stored_within_the_ttl(redis: fakeredis.FakeRedis) -> None:
    stored(redis, "111", "Purchase", "e1")
    redis.hset(keys.ledger_names(), "111:OldName", AT_MS - 30 * 86_400_000)

    assert (["111:Purchase:e1"], 1) == (Ledger(redis, TTL_S).copies("e1"),
                                        len(redis.hkeys(keys.ledger_names())) - 1)


def test_an_operator_s_requeue_and_discard_are_steps_of_the_event_s_life(
        redis: fakeredis.FakeRedis) -> None:
    # Given an event dead twice: requeued by one operator, then discarded by another
    ledger = Ledger(redis, TTL_S)
    dead = DeadLetters(redis, TTL_S)
    env = envelope("e1")
    stored(redis, env.pixel_id, "Purchase", "e1", env.received_ms)
    dead.add([env], {"kind": "rejected", "code": 100})
    ledger.record([Entry(env.dedup_key, "e1", env.pixel_id, "Purchase", "dead",
                         {"batch": "b1"}, env.received_ms)], AT_MS)
    dead.requeue(env.dedup_key, "relay_high", Actor("alice", "dashboard", AT_MS + 1, "j1"))
    dead.add([env], {"kind": "rejected", "code": 100})
    ledger.record([Entry(env.dedup_key, "e1", env.pixel_id, "Purchase", "dead",
                         {"batch": "b2"}, env.received_ms)], AT_MS + 2)
    dead.discard(env.dedup_key, Actor("bob", "cli", AT_MS + 3, "j2"))

    record = ledger.event(env.dedup_key)

    assert ("dead", [("dead", None, None), ("requeued", "alice", "dashboard"),
                     ("dead", None, None), ("discarded", "bob", "cli")],
            [AT_MS, AT_MS + 1, AT_MS + 2, AT_MS + 3]) == (
        record.state, [(e["state"], e.get("by"), e.get("via")) for e in record.life],
        [e["at_ms"] for e in record.life])


def test_a_bulk_action_writes_its_step_once_per_pixel(redis: fakeredis.FakeRedis) -> None:
    dead = DeadLetters(redis, TTL_S)
    envs = [envelope(f"e{i}") for i in range(3)]
    dead.add(envs, {"kind": "rejected", "code": 100})
    for env in envs:
        stored(redis, env.pixel_id, "Purchase", env.event.event_id, env.received_ms)
    by = Actor("alice", "dashboard", AT_MS, "job1")

    moved = [dead.requeue(env.dedup_key, "relay_high", by) for env in envs]

    assert ([True] * 3, 1, ["requeued"] * 3) == (
        moved, redis.llen(keys.batch_log(envs[0].pixel_id, by.batch)),
        [Ledger(redis, TTL_S).state(env.dedup_key) for env in envs])


def test_records_and_batch_logs_expire_after_the_ttl(redis: fakeredis.FakeRedis) -> None:
    Ledger(redis, 3600).record([entry("delivered", batch="b1")], AT_MS)

    assert [3600, 3600] == [redis.ttl(keys.ledger_bucket_of("111:Purchase:e1", AT_MS)),
                            redis.ttl(keys.batch_log("111", "b1"))]


def test_a_batch_step_is_written_once_for_all_its_events(redis: fakeredis.FakeRedis) -> None:
    Ledger(redis, TTL_S).record([entry("delivered", f"e{i}", batch="b1", fbtrace_id="T",
                                       received_ms=AT_MS - 5, delay_ms=5)
                                 for i in range(3)], AT_MS)

    assert [{"at_ms": AT_MS, "state": "delivered", "fbtrace_id": "T"}] == [
        msgspec.json.decode(s) for s in redis.lrange(keys.batch_log("111", "b1"), 0, -1)]


def test_a_record_is_one_short_field(redis: fakeredis.FakeRedis) -> None:
    ledger = Ledger(redis, TTL_S)
    ledger.record([Entry("111:Purchase:e1", "e1", "111", "Purchase", "attempt", {"batch": "b1"},
                         AT_MS - 5, "server")], AT_MS)
    ledger.record([Entry("111:Purchase:e1", "e1", "111", "Purchase", "delivered",
                         {"batch": "b1"}, AT_MS - 5, "server")], AT_MS + 1)

    assert f"d|{AT_MS - 5}|s|b1#0#1".encode() == redis.hget(
        keys.ledger_bucket_of("111:Purchase:e1", AT_MS - 5), "Purchase:e1")


def test_delivered_step_shows_the_event_s_own_receive_time_and_delay(
        redis: fakeredis.FakeRedis) -> None:
    ledger = Ledger(redis, TTL_S)
    ledger.record([Entry("111:Purchase:e1", "e1", "111", "Purchase", "delivered",
                         {"batch": "b1", "attempt": 1}, AT_MS - 40, "redirect")], AT_MS)

    assert [{"at_ms": AT_MS, "state": "delivered", "pixel_id": "111", "batch": "b1",
             "attempt": 1, "received_ms": AT_MS - 40, "source": "redirect", "delay_ms": 40}
            ] == ledger.life("111:Purchase:e1")


def test_the_layout_before_the_buckets_is_still_read(redis: fakeredis.FakeRedis) -> None:
    # Given an event the version before recorded, then this one
    redis.rpush(keys.life("111:Purchase:e1"), msgspec.json.encode(
        {"at_ms": AT_MS - 10, "state": "attempt", "pixel_id": "111", "code": 2}))
    redis.set(keys.state("111:Purchase:e1"), "deferred")
    redis.sadd(keys.event_index("e1"), "111:Purchase:e1")
    ledger = Ledger(redis, TTL_S)
    ledger.record([entry("delivered", batch="b2")], AT_MS)

    assert ("delivered", ["attempt", "delivered"], ["111:Purchase:e1"]) == (
        ledger.state("111:Purchase:e1"), [e["state"] for e in ledger.life("111:Purchase:e1")],
        ledger.keys_for_event("e1"))


def test_record_counts_per_minute_state_pixel_and_name(redis: fakeredis.FakeRedis) -> None:
    Ledger(redis, TTL_S).record([entry("delivered", "e1"), entry("delivered", "e2"),
                                 entry("dead", "e3")], AT_MS)

    assert {b"delivered:111:Purchase": b"2", b"dead:111:Purchase": b"1"} == redis.hgetall(
        keys.counters(minute_of(AT_MS)))


def test_count_adds_up(redis: fakeredis.FakeRedis) -> None:
    ledger = Ledger(redis, TTL_S)
    ledger.count(Counter({"accepted:111:Lead": 2}), AT_MS)
    ledger.count(Counter({"accepted:111:Lead": 3}), AT_MS + 1)

    assert b"5" == redis.hget(keys.counters(minute_of(AT_MS)), "accepted:111:Lead")


def test_record_of_nothing_writes_nothing(redis: fakeredis.FakeRedis) -> None:
    Ledger(redis, TTL_S).record([], AT_MS)

    assert [] == redis.keys("*")


def test_latency_is_kept_as_histogram_sum_and_count(redis: fakeredis.FakeRedis) -> None:
    ledger = Ledger(redis, TTL_S)
    ledger.observe_batch("111", 80.0, [], AT_MS)
    ledger.observe_batch("111", 90.5, [], AT_MS)

    assert {b"111:100": b"2", b"111:sum_ms": b"170.5", b"111:count": b"2"} == redis.hgetall(
        keys.latency(minute_of(AT_MS)))


@pytest.mark.parametrize(("latency_ms", "bucket"),
                         [(0, "25"), (25, "25"), (25.1, "50"), (6400, "6400"), (6401, "inf")])
def test_bucket_for(latency_ms: float, bucket: str) -> None:
    assert bucket == bucket_for(latency_ms)


def test_minute_of() -> None:
    assert 2 == minute_of(179_999)


def test_duplicate_does_not_hide_an_earlier_state(redis: fakeredis.FakeRedis) -> None:
    ledger = Ledger(redis, TTL_S)
    ledger.record([entry("delivered")], AT_MS)
    ledger.record([entry("duplicate")], AT_MS + 1)

    assert ("delivered", ["delivered", "duplicate"]) == (
        ledger.state("111:Purchase:e1"),
        [e["state"] for e in ledger.life("111:Purchase:e1")])


def test_duplicate_of_an_unknown_event_sets_the_state(redis: fakeredis.FakeRedis) -> None:
    ledger = Ledger(redis, TTL_S)
    ledger.record([entry("duplicate")], AT_MS)

    assert "duplicate" == ledger.state("111:Purchase:e1")


def test_delays_are_histogrammed_per_pixel_and_event_name(redis: fakeredis.FakeRedis) -> None:
    ledger = Ledger(redis, 3600)

    ledger.observe_batch("111", 120.0, [("Purchase", 300.0), ("Purchase", 700.0),
                                        ("PageView", 40_000.0)], AT_MS)

    stored = {k.decode(): v.decode()
              for k, v in redis.hgetall(keys.latency(minute_of(AT_MS))).items()}
    assert {"111:200": "1", "111:count": "1", "111:sum_ms": "120"} == {
        k: v for k, v in stored.items() if not k.startswith("delay:")}
    assert {
        "delay:111:Purchase:500": "1", "delay:111:Purchase:1000": "1",
        "delay:111:Purchase:count": "2", "delay:111:Purchase:sum_ms": "1000",
        "delay:111:PageView:60000": "1", "delay:111:PageView:count": "1",
        "delay:111:PageView:sum_ms": "40000",
    } == {k: v for k, v in stored.items() if k.startswith("delay:")}

"""relay.inbox: the STORE script (collector side) and the BATCH script (relay side)."""

from __future__ import annotations

import dramatiq
import fakeredis
import fakeredis.aioredis

from relay import keys
from relay.inbox import (
    BATCH,
    AsyncStore,
    Batcher,
    ClickWrite,
    EventWrite,
    Write,
    store_call,
    store_sync,
    write_decoder,
    write_encoder,
)

QUEUE = "relay_high"
PIXEL = "1234567890"
OTHER = "9999999999"
RECEIVED_MS = 1_790_000_000_000


def event_write(i: int, *, pixel: str = PIXEL, queue: str = QUEUE,
                received_ms: int = RECEIVED_MS) -> EventWrite:
    return EventWrite(queue, pixel, f"{pixel}:Purchase:e{i}", received_ms, f"payload-{i}".encode())


def items(redis: fakeredis.FakeRedis, key: str) -> list[bytes]:
    return redis.lrange(key, 0, -1)


def messages(redis: fakeredis.FakeRedis, queue: str = QUEUE) -> list[dramatiq.Message]:
    ids = redis.lrange(keys.dramatiq_queue(queue), 0, -1)
    return [dramatiq.Message.decode(redis.hget(f"{keys.dramatiq_queue(queue)}.msgs", i))
            for i in ids]


# -- STORE ----------------------------------------------------------------------------------------
def test_store_appends_events_to_the_pixel_inbox_in_order(redis: fakeredis.FakeRedis) -> None:
    store_sync(redis, [event_write(1), event_write(2), event_write(3)], 3600)

    assert [b"payload-1", b"payload-2", b"payload-3"] == items(redis, keys.inbox(QUEUE, PIXEL))


def test_store_marks_the_pixel_as_waiting_in_its_queue(redis: fakeredis.FakeRedis) -> None:
    store_sync(redis, [event_write(1), event_write(2, pixel=OTHER),
                       event_write(3, queue="relay_low")], 3600)

    assert ({PIXEL.encode(), OTHER.encode()}, {PIXEL.encode()}) == (
        redis.smembers(keys.inbox_pixels(QUEUE)), redis.smembers(keys.inbox_pixels("relay_low")))


def record(redis: fakeredis.FakeRedis, i: int, received_ms: int = RECEIVED_MS) -> bytes | None:
    dedup_key = f"{PIXEL}:Purchase:e{i}"
    return redis.hget(keys.ledger_bucket_of(dedup_key, received_ms), f"Purchase:e{i}")


def test_store_records_accepted_events_with_their_receive_time(
        redis: fakeredis.FakeRedis) -> None:
    store_sync(redis, [event_write(1), event_write(2, received_ms=RECEIVED_MS + 86_400_000)],
               3600)

    assert (f"a|{RECEIVED_MS}||".encode(), f"a|{RECEIVED_MS + 86_400_000}||".encode()) == (
        record(redis, 1), record(redis, 2, RECEIVED_MS + 86_400_000))


def test_a_repeat_the_same_day_keeps_the_first_receive_time(redis: fakeredis.FakeRedis) -> None:
    store_sync(redis, [event_write(1)], 3600)
    store_sync(redis, [event_write(1, received_ms=RECEIVED_MS + 5)], 3600)

    assert f"a|{RECEIVED_MS}||".encode() == record(redis, 1)


def test_ledger_buckets_expire_after_the_ledger_ttl(redis: fakeredis.FakeRedis) -> None:
    store_sync(redis, [event_write(1)], 7200)

    assert 7200 == redis.ttl(keys.ledger_bucket_of(f"{PIXEL}:Purchase:e1", RECEIVED_MS))


def test_store_saves_click_contexts_of_ids_without_a_day_as_keys_with_their_ttl(
        redis: fakeredis.FakeRedis) -> None:
    store_sync(redis, [ClickWrite("click-1", 600, b'{"click_id":"click-1"}'), event_write(1)],
               3600)

    assert (b'{"click_id":"click-1"}', 600) == (redis.get(keys.click("click-1")),
                                                redis.ttl(keys.click("click-1")))


def test_store_of_clicks_alone_adds_no_event(redis: fakeredis.FakeRedis) -> None:
    store_sync(redis, [ClickWrite("click-1", 600, b"{}")], 3600)

    assert [keys.click("click-1").encode()] == redis.keys("*")


async def test_async_store_writes_what_store_sync_writes() -> None:
    server = fakeredis.FakeServer()
    async_client = fakeredis.aioredis.FakeRedis(server=server)
    sync_client = fakeredis.FakeRedis(server=server)
    store = AsyncStore(async_client, ledger_ttl_s=3600)

    await store([event_write(1), ClickWrite("click-1", 600, b"{}"), event_write(2)])

    assert ([b"payload-1", b"payload-2"], {PIXEL.encode()}, [True, True], b"{}") == (
        items(sync_client, keys.inbox(QUEUE, PIXEL)),
        sync_client.smembers(keys.inbox_pixels(QUEUE)),
        [record(sync_client, i) is not None for i in (1, 2)],
        sync_client.get(keys.click("click-1")))
    await async_client.aclose()


def test_each_write_survives_msgpack_encoding() -> None:
    writes: list[Write] = [event_write(1), ClickWrite("c", 5, b"{}")]

    assert writes == [write_decoder.decode(write_encoder.encode(w)) for w in writes]


# -- BATCH ----------------------------------------------------------------------------------------
def batcher(redis: fakeredis.FakeRedis, *, max_batch: int = 1000, max_ready: int = 16) -> Batcher:
    return Batcher(redis, QUEUE, "deliver_high", max_batch=max_batch, max_ready=max_ready)


def test_batch_message_is_a_dramatiq_message_for_the_actor(redis: fakeredis.FakeRedis) -> None:
    store_sync(redis, [event_write(1), event_write(2)], 3600)

    batcher(redis).run_once()

    [message] = messages(redis)
    assert (QUEUE, "deliver_high", (PIXEL, ["payload-1", "payload-2"])) == (
        message.queue_name, message.actor_name, message.args)


def test_batch_message_id_is_its_redis_message_id(redis: fakeredis.FakeRedis) -> None:
    store_sync(redis, [event_write(1)], 3600)

    batcher(redis).run_once()

    [message] = messages(redis)
    stored_id = redis.lindex(keys.dramatiq_queue(QUEUE), 0).decode()
    assert (stored_id, stored_id) == (message.message_id, message.options["redis_message_id"])


def test_batch_message_ids_are_unique(redis: fakeredis.FakeRedis) -> None:
    store_sync(redis, [event_write(i) for i in range(5)], 3600)
    batcher(redis, max_batch=1).run_once()
    store_sync(redis, [event_write(i) for i in range(5, 10)], 3600)
    batcher(redis, max_batch=1).run_once()

    assert 10 == len({m.message_id for m in messages(redis)})


def test_batches_hold_at_most_max_batch_events_in_order(redis: fakeredis.FakeRedis) -> None:
    store_sync(redis, [event_write(i) for i in range(7)], 3600)

    made = batcher(redis, max_batch=3).run_once()

    assert (3, [["payload-0", "payload-1", "payload-2"], ["payload-3", "payload-4", "payload-5"],
                ["payload-6"]]) == (made, [m.args[1] for m in messages(redis)])


def test_one_batch_per_pixel(redis: fakeredis.FakeRedis) -> None:
    store_sync(redis, [event_write(1), event_write(2, pixel=OTHER), event_write(3)], 3600)

    batcher(redis).run_once()

    assert {PIXEL: ["payload-1", "payload-3"], OTHER: ["payload-2"]} == {
        m.args[0]: m.args[1] for m in messages(redis)}


def test_emptied_inbox_is_cleared_from_the_pixel_set(redis: fakeredis.FakeRedis) -> None:
    store_sync(redis, [event_write(1)], 3600)

    batcher(redis).run_once()

    assert (set(), 0) == (redis.smembers(keys.inbox_pixels(QUEUE)),
                          redis.exists(keys.inbox(QUEUE, PIXEL)))


def test_batcher_stops_at_max_ready_messages(redis: fakeredis.FakeRedis) -> None:
    store_sync(redis, [event_write(i) for i in range(10)], 3600)

    made = batcher(redis, max_batch=2, max_ready=3).run_once()

    assert (3, 3, [b"payload-6", b"payload-7", b"payload-8", b"payload-9"]) == (
        made, redis.llen(keys.dramatiq_queue(QUEUE)), items(redis, keys.inbox(QUEUE, PIXEL)))


def test_pixel_with_events_left_stays_in_the_set(redis: fakeredis.FakeRedis) -> None:
    store_sync(redis, [event_write(i) for i in range(4)], 3600)

    batcher(redis, max_batch=2, max_ready=1).run_once()

    assert {PIXEL.encode()} == redis.smembers(keys.inbox_pixels(QUEUE))


def test_batcher_makes_nothing_while_the_queue_is_full(redis: fakeredis.FakeRedis) -> None:
    store_sync(redis, [event_write(i) for i in range(4)], 3600)
    batcher(redis, max_batch=1, max_ready=2).run_once()

    assert 0 == batcher(redis, max_batch=1, max_ready=2).run_once()


def test_batcher_resumes_once_the_queue_drains(redis: fakeredis.FakeRedis) -> None:
    store_sync(redis, [event_write(i) for i in range(3)], 3600)
    batcher(redis, max_batch=1, max_ready=2).run_once()
    redis.delete(keys.dramatiq_queue(QUEUE))

    made = batcher(redis, max_batch=1, max_ready=2).run_once()

    assert (1, [["payload-2"]]) == (made, [m.args[1] for m in messages(redis)])


def test_batcher_with_empty_inbox_makes_nothing(redis: fakeredis.FakeRedis) -> None:
    assert (0, []) == (batcher(redis).run_once(), redis.keys("*"))


def test_batcher_leaves_other_queues_alone(redis: fakeredis.FakeRedis) -> None:
    store_sync(redis, [event_write(1, queue="relay_low")], 3600)

    batcher(redis).run_once()

    assert [b"payload-1"] == items(redis, keys.inbox("relay_low", PIXEL))


def test_a_batch_call_sent_again_after_a_lost_reply_does_nothing(
        redis: fakeredis.FakeRedis) -> None:
    # Given a call that ran, whose reply was lost, and events stored before the client retries
    script = redis.register_script(BATCH)
    queue_key = keys.dramatiq_queue(QUEUE)
    call = dict(keys=[keys.inbox_pixels(QUEUE), keys.inbox(QUEUE, PIXEL), queue_key,
                      f"{queue_key}.msgs", keys.batch_call("call-1"), keys.breaker(PIXEL)],
                args=[QUEUE, "deliver_high", PIXEL, 1000, 16, RECEIVED_MS, "call-1"])
    store_sync(redis, [event_write(1), event_write(2)], 3600)
    script(**call)
    store_sync(redis, [event_write(3)], 3600)

    again = script(**call)

    # Then the retry makes nothing: the first batch keeps its events, the new one waits
    assert (0, [["payload-1", "payload-2"]], [b"payload-3"]) == (
        again, [m.args[1] for m in messages(redis)],
        items(redis, keys.inbox(QUEUE, PIXEL)))


def test_store_gives_the_script_every_key_it_touches() -> None:
    names, _ = store_call([event_write(1), ClickWrite("click-1", 600, b"{}")], 3600)

    assert sorted([keys.inbox(QUEUE, PIXEL), keys.inbox_pixels(QUEUE),
                   keys.ledger_bucket_of(f"{PIXEL}:Purchase:e1", RECEIVED_MS),
                   keys.counters(RECEIVED_MS // 60_000), keys.ledger_names(),
                   keys.click("click-1")]) == sorted(names)
    assert len(set(names)) == len(names)  # each once


def test_a_group_adds_each_pixel_once_and_counts_its_events_per_minute_in_one_field(
        redis: fakeredis.FakeRedis) -> None:
    store_sync(redis, [event_write(i) for i in range(1, 6)], 3600)

    names, args = store_call([event_write(i) for i in range(1, 6)], 3600)
    assert ({PIXEL.encode()}, b"5", 1, 1) == (
        redis.smembers(keys.inbox_pixels(QUEUE)),
        redis.hget(keys.counters(RECEIVED_MS // 60_000), f"received:{PIXEL}:Purchase"),
        names.count(keys.inbox_pixels(QUEUE)), args.count(f"received:{PIXEL}:Purchase"))

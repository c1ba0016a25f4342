"""Processes die: a worker killed or stopped mid-batch, Redis stopped or killed; nothing is lost."""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence

import dramatiq

from relay.events import Envelope, encode
from tests.integration.conftest import FakeMeta, RelayStack, make_envelope
from tests.support import DEMO_PIXEL, wait_for

HEARTBEATS = "dramatiq:__heartbeats__"

REDELIVERY_LIMIT_S = 30.0


def _delivered_entries(stack: RelayStack, events: Sequence[Envelope]) -> Counter[int]:
    """How many events have 0, 1, 2... 'delivered' entries in their ledger life."""
    ledger = stack.ledger()
    return Counter(sum(1 for entry in ledger.life(e.dedup_key) if entry["state"] == "delivered")
                   for e in events)


def _aof_written(stack: RelayStack, since: float) -> bool:
    """More than a second since ``since`` (appendfsync everysec) and nothing left to write."""
    info = stack.client().info("persistence")
    return (time.monotonic() - since > 1.2 and info["aof_buffer_length"] == 0
            and info["aof_pending_bio_fsync"] == 0)


def test_batches_of_a_killed_worker_are_delivered_once_by_another(
    fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]
) -> None:
    # 1 s: long enough to kill with requests in flight, short of the relay's 1.5 s timeout
    # (past it every request would time out, be retried, and reach the fake twice).
    meta = fake_meta(FAKEMETA_LATENCY_MS="1000")
    stack = relay_stack(meta)
    events = [make_envelope("PageView") for _ in range(12_000)]
    stack.inject(events)
    doomed = stack.worker("low")  # 12 batches: 8 sent at once (8 threads), 4 prefetched

    wait_for(lambda: 12 == stack.unacked("relay_low"), 15, what="12 batches fetched")
    client = stack.client()
    [acks] = client.keys("dramatiq:__acks__.*.relay_low")
    # The requests in flight end in a 503 after their 1 s latency: Meta never accepted them.
    # (Answered, the fake accepts them like Meta would, from a client that is gone, and the
    # relay has no way to know: those events would arrive twice. See docs/relay.md.) The
    # replacement's first requests may land in the outage too; they are retried.
    meta.faults(outage_s=4)
    assert 0 == meta.received()["requests"], "a request was answered before the kill"
    doomed.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    stack.worker("low")

    wait_for(lambda: 0 == client.scard(acks), REDELIVERY_LIMIT_S, interval_s=0.1,
             what="the dead worker's batches to be requeued")
    requeued_s = time.monotonic() - killed_at
    ids = stack.wait_delivered(events, timeout_s=REDELIVERY_LIMIT_S)
    delivered_s = time.monotonic() - killed_at

    print(f"kill -9: batches requeued after {requeued_s:.1f} s (heartbeat_timeout 3 s), all "
          f"12,000 events at fake Meta after {delivered_s:.1f} s (4 s outage, 1 s latency)")
    assert delivered_s < REDELIVERY_LIMIT_S
    assert {e.event.event_id: 1 for e in events} == dict(ids)
    assert 0 == meta.pixel()["duplicates"]
    wait_for(lambda: {"delivered": 12_000} == stack.states(events), 10, what="ledger")
    assert {1: 12_000} == dict(_delivered_entries(stack, events))


def test_a_batch_meta_accepted_before_the_crash_is_not_sent_again(
    fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]
) -> None:
    # Given: the state a worker leaves when killed after Meta's answer and before its ack: the
    # batch message is fetched (in a dead worker's ack set) and its events are marked sent.
    meta = fake_meta()
    stack = relay_stack(meta)
    events = [make_envelope("PageView") for _ in range(50)]
    stack.inject(events)
    client = stack.client()
    from relay.inbox import Batcher

    assert 1 == Batcher(client, "relay_low", "deliver_low", 1000, 16).run_once()
    message_id = client.lpop("dramatiq:relay_low").decode()
    client.sadd("dramatiq:__acks__.dead-worker.relay_low", message_id)
    client.zadd("dramatiq:__heartbeats__", {"dead-worker": int(time.time() * 1000) - 60_000})
    for e in events:
        client.set(f"pixelrelay:dedup:{e.dedup_key}", f"done:{message_id}")

    # When: a live worker recovers the dead one's message and runs it.
    stack.worker("low")

    wait_for(lambda: 0 == client.hlen("dramatiq:relay_low.msgs")
             and 0 == client.scard("dramatiq:__acks__.dead-worker.relay_low"),
             15, what="the recovered batch to be processed and acked")
    assert 0 == meta.received()["requests"]
    wait_for(lambda: {"delivered": 50} == stack.states(events), 10, what="ledger")
    assert {"delivered": 50} == stack.states(events)
    assert [("delivered", "on redelivery")] == [
        (e["state"], e.get("confirmed")) for e in stack.ledger().life(events[0].dedup_key)]


def test_a_stopped_worker_finishes_its_batches_and_exits_cleanly(
    fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]
) -> None:
    meta = fake_meta(FAKEMETA_LATENCY_MS="1000")
    stack = relay_stack(meta)
    events = [make_envelope("PageView") for _ in range(12_000)]
    stack.inject(events)
    stopping = stack.worker("low")  # 12 batches: 8 sent at once (8 threads), 4 prefetched
    wait_for(lambda: 12 == stack.unacked("relay_low"), 15, what="12 batches fetched")

    started = time.monotonic()
    stopping.signal(signal.SIGTERM)
    assert stopping.popen is not None
    code = stopping.popen.wait(20)
    took_s = time.monotonic() - started
    sent_by_first = meta.pixel()["events"]
    stack.worker("low")

    ids = stack.wait_delivered(events, timeout_s=30)
    print(f"SIGTERM to exit: {took_s:.1f} s; the stopped worker delivered {sent_by_first}, "
          "the next one the rest")
    assert 0 == code, stopping.output()[-2000:]
    assert sent_by_first >= 8_000, "the batches in flight were not finished"
    assert {e.event.event_id: 1 for e in events} == dict(ids)
    assert 0 == meta.pixel()["duplicates"]
    wait_for(lambda: {"delivered": 12_000} == stack.states(events), 10, what="ledger")


def test_events_survive_a_redis_restart_and_a_running_worker_reconnects(
    fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]
) -> None:
    stack = relay_stack(fake_meta())
    before = [make_envelope(name) for name in ("PageView", "ViewContent", "Purchase")
              for _ in range(100)]
    stack.inject(before)
    injected_at = time.monotonic()
    wait_for(lambda: _aof_written(stack, injected_at), 10, what="the AOF to be written")

    stack.redis.stop()  # SIGTERM
    stack.redis.start()  # same directory and port
    stack.worker()
    stack.wait_delivered(before)

    # When: Redis restarts under a running worker, and events arrive afterwards.
    stack.redis.stop()
    stack.redis.start()
    after = [make_envelope("Purchase") for _ in range(20)]
    stack.inject(after)

    ids = stack.wait_delivered(before + after, timeout_s=30)
    assert {e.event.event_id: 1 for e in before + after} == dict(ids)
    wait_for(lambda: {"delivered": 320} == stack.states(before + after), 10, what="ledger")
    audit = stack.tool("audit")
    assert 0 == audit.returncode, audit.stdout


def _send_a_batch_slowly(stack: RelayStack, meta: FakeMeta, outage_s: float = 0
                         ) -> list[Envelope]:
    """50 Purchases, returned once a worker's request for them is in flight at the fake (held
    by its latency); with ``outage_s``, the fake answers it 503."""
    stack.worker()
    wait_for(lambda: 0 == meta.received()["in_flight"], 10, what="the health check to end")
    if outage_s:
        meta.faults(outage_s=outage_s)
    events = [make_envelope("Purchase") for _ in range(50)]
    stack.inject(events)
    wait_for(lambda: meta.received()["in_flight"], 10, interval_s=0.02,
             what="the batch to be sent")
    return events


def test_a_batch_meta_accepts_while_redis_is_down_is_recorded_not_resent(
    fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]
) -> None:
    meta = fake_meta(FAKEMETA_LATENCY_MS="1000")  # under the relay's 1.5 s timeout
    stack = relay_stack(meta)
    events = _send_a_batch_slowly(stack, meta)

    # When: Redis stops while the request is in flight, and Meta accepts it meanwhile.
    stack.redis.stop()
    assert 0 == meta.received()["requests"], "Meta answered before Redis stopped"
    wait_for(lambda: meta.received()["requests"], 5, what="Meta to answer")
    time.sleep(0.5)  # the worker's bookkeeping fails at least once
    stack.redis.start()
    restarted = time.monotonic()

    wait_for(lambda: {"delivered": 50} == stack.states(events), 10, what="ledger")
    recorded_s = time.monotonic() - restarted
    print(f"recorded {recorded_s:.1f} s after Redis came back")
    assert recorded_s < 4.0, "recorded by a Dramatiq retry (5 s or later), not in place"
    time.sleep(1.0)
    assert 1 == meta.received()["requests"]
    assert {e.event.event_id: 1 for e in events} == dict(meta.event_ids())


def test_a_batch_meta_refuses_while_redis_is_down_is_retried_not_lost(
    fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]
) -> None:
    meta = fake_meta(FAKEMETA_LATENCY_MS="1000")
    stack = relay_stack(meta)
    events = _send_a_batch_slowly(stack, meta, outage_s=3)  # answered 503: transient

    # When: Redis stops while the request is in flight, and Meta refuses it meanwhile: the
    # worker's bookkeeping and the retry's enqueue both meet a Redis that is down.
    stack.redis.stop()
    wait_for(lambda: meta.received()["rejected"], 5, what="Meta to refuse the batch")
    time.sleep(1.0)
    stack.redis.start()

    # Then the batch is retried once Redis is back, and delivered once
    ids = stack.wait_delivered(events, timeout_s=30)
    assert {e.event.event_id: 1 for e in events} == dict(ids)
    wait_for(lambda: {"delivered": 50} == stack.states(events), 10, what="ledger")


def test_live_workers_are_not_taken_for_dead_after_a_redis_outage(
    fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]
) -> None:
    # Given two workers on one queue, each holding batches (in flight and prefetched)
    meta = fake_meta(FAKEMETA_LATENCY_MS="1000")
    stack = relay_stack(meta)
    stack.worker("low")
    stack.worker("low")
    events = [make_envelope("PageView") for _ in range(30_000)]
    stack.inject(events)
    wait_for(lambda: stack.unacked("relay_low") >= 20, 15, what="batches fetched")

    # When Redis is away longer than the heartbeat timeout (3 s in the test config), so that
    # every heartbeat looks stale when it returns
    stack.redis.stop()
    time.sleep(5)
    stack.redis.start()

    # Then no worker requeues the other's batches: nothing is sent twice
    ids = stack.wait_delivered(events, timeout_s=60)
    assert {e.event.event_id: 1 for e in events} == dict(ids)
    assert 0 == meta.pixel()["duplicates"]


def test_a_batch_whose_fetch_reply_was_lost_is_requeued_by_its_worker(
    fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]
) -> None:
    meta = fake_meta()
    stack = relay_stack(meta)
    worker = stack.worker("low")
    client = stack.client()
    [worker_id] = wait_for(lambda: client.zrange(HEARTBEATS, 0, -1), 10, what="a heartbeat")

    # Given a batch in the worker's ack set that none of its fetches returned: what Redis
    # shutting down right after running a fetch leaves behind
    events = [make_envelope("PageView") for _ in range(20)]
    redis_id = str(uuid.uuid4())
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name="relay_low", actor_name="deliver_low",
        args=(DEMO_PIXEL, [encode(e).decode() for e in events]), kwargs={},
        options={"redis_message_id": redis_id})
    client.hset("dramatiq:relay_low.msgs", redis_id, message.encode())
    client.sadd(f"dramatiq:__acks__.{worker_id.decode()}.relay_low", redis_id)

    # Then the worker notices within two checks (a heartbeat timeout apart, 3 s in the test
    # config) and the batch is delivered once
    ids = stack.wait_delivered(events, timeout_s=30)
    assert {e.event.event_id: 1 for e in events} == dict(ids)
    assert "stranded_messages_requeued" in worker.output()


def test_events_survive_redis_being_killed(
    fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]
) -> None:
    stack = relay_stack(fake_meta())
    events = [make_envelope(name) for name in ("PageView", "ViewContent", "Purchase")
              for _ in range(100)]
    stack.inject(events)
    injected_at = time.monotonic()
    wait_for(lambda: _aof_written(stack, injected_at), 10, what="the AOF to be written")

    stack.redis.kill()  # SIGKILL: no shutdown, only what the AOF holds
    stack.redis.start()
    stack.worker()

    ids = stack.wait_delivered(events)
    assert {e.event.event_id: 1 for e in events} == dict(ids)
    wait_for(lambda: {"delivered": 300} == stack.states(events), 10, what="ledger")
    audit = stack.tool("audit")
    assert 0 == audit.returncode, audit.stdout

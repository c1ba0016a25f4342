"""relay.broker: the retry policy, and recovery of a dead worker's unacked messages."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import dramatiq
import dramatiq.broker
import fakeredis
import pytest
from dramatiq.broker import MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries
from redis import exceptions as redis_errors

from relay import keys
from relay.broker import (
    MAX_DEAD_MESSAGE_TTL_MS,
    PatientRetries,
    RecoveryGate,
    RelayBroker,
    enqueue_patiently,
    make_broker,
    retry_when,
)
from relay.config import RelaySettings
from relay.errors import TransientError

QUEUE = "relay_high"
HEARTBEATS = f"{keys.DRAMATIQ_NAMESPACE}:__heartbeats__"
HEARTBEAT_TIMEOUT_MS = 10_000


@pytest.fixture(autouse=True)
def keep_global_broker() -> Iterator[None]:
    """make_broker sets Dramatiq's global broker: put the previous one back."""
    previous = dramatiq.broker.global_broker
    yield
    dramatiq.broker.global_broker = previous


# -- retry_when -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("retries", "expected"), [(0, True), (1, True), (2, False), (5, False)])
def test_retry_when_allows_max_attempts_in_all(retries: int, expected: bool) -> None:
    assert expected == retry_when(3)(retries, TransientError("x"))


def test_single_attempt_is_never_retried() -> None:
    assert False is retry_when(1)(0, RuntimeError("x"))


def test_dramatiq_runs_an_always_failing_actor_max_attempts_times() -> None:
    broker = StubBroker(middleware=[Retries(min_backoff=1, max_backoff=5,
                                            retry_when=retry_when(3))])
    calls: list[int] = []
    done = threading.Event()

    def flaky() -> None:
        calls.append(1)
        raise TransientError("Meta is down")

    actor = dramatiq.actor(broker=broker, queue_name=QUEUE)(flaky)
    worker = dramatiq.Worker(broker, worker_timeout=10)
    worker.start()
    try:
        actor.send()
        deadline = time.monotonic() + 10
        while not broker.dead_letters and time.monotonic() < deadline:
            done.wait(0.01)
    finally:
        worker.stop()

    assert (3, 1) == (len(calls), len(broker.dead_letters))


# -- make_broker ----------------------------------------------------------------------------------
def test_make_broker_applies_the_relay_settings(redis: fakeredis.FakeRedis) -> None:
    settings = RelaySettings(heartbeat_timeout_ms=3000, min_backoff_ms=100, max_backoff_ms=2000,
                             max_attempts=4)

    broker = make_broker(redis, settings)

    retries = next(m for m in broker.middleware if isinstance(m, Retries))
    assert (3000, 0, MAX_DEAD_MESSAGE_TTL_MS, keys.DRAMATIQ_NAMESPACE, 100, 2000,
            [True, True, True, False]) == (
        broker.heartbeat_timeout, broker.maintenance_chance, broker.dead_message_ttl,
        broker.namespace, retries.min_backoff, retries.max_backoff,
        [retries.retry_when(n, TransientError("x")) for n in range(4)])  # type: ignore[misc]


def test_make_broker_becomes_the_global_broker(redis: fakeredis.FakeRedis) -> None:
    broker = make_broker(redis, RelaySettings())

    assert broker is dramatiq.get_broker()


# -- recover --------------------------------------------------------------------------------------
def relay_broker(redis: fakeredis.FakeRedis) -> RelayBroker:
    broker = RelayBroker(client=redis, namespace=keys.DRAMATIQ_NAMESPACE,
                         heartbeat_timeout=HEARTBEAT_TIMEOUT_MS, maintenance_chance=0,
                         middleware=[])
    broker.declare_queue(QUEUE)
    return broker


def enqueue(broker: RelayBroker, queue: str = QUEUE) -> str:
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name=queue, actor_name="deliver_high", args=("111", []), kwargs={}, options={})
    return str(broker.enqueue(message).options["redis_message_id"])


def ready(redis: fakeredis.FakeRedis, queue: str = QUEUE) -> list[str]:
    return [i.decode() for i in redis.lrange(keys.dramatiq_queue(queue), 0, -1)]


def last_seen_long_ago(redis: fakeredis.FakeRedis, broker: RelayBroker) -> None:
    old_ms = int(time.time() * 1000) - HEARTBEAT_TIMEOUT_MS - 1000
    redis.zadd(HEARTBEATS, {broker.broker_id: old_ms})


def test_fetched_message_leaves_the_queue(redis: fakeredis.FakeRedis) -> None:
    producer, worker = relay_broker(redis), relay_broker(redis)
    message_id = enqueue(producer)

    worker.do_fetch(QUEUE, 1)

    assert ([], {message_id.encode()}) == (
        ready(redis), redis.smembers(f"dramatiq:__acks__.{worker.broker_id}.{QUEUE}"))


def test_recover_requeues_a_dead_workers_unacked_message(redis: fakeredis.FakeRedis) -> None:
    producer, worker, survivor = relay_broker(redis), relay_broker(redis), relay_broker(redis)
    message_id = enqueue(producer)
    worker.do_fetch(QUEUE, 1)
    last_seen_long_ago(redis, worker)

    survivor.recover([QUEUE])

    assert [message_id] == ready(redis)


def test_recover_forgets_the_dead_worker(redis: fakeredis.FakeRedis) -> None:
    producer, worker, survivor = relay_broker(redis), relay_broker(redis), relay_broker(redis)
    enqueue(producer)
    worker.do_fetch(QUEUE, 1)
    last_seen_long_ago(redis, worker)

    survivor.recover([QUEUE])

    assert (0, None) == (redis.exists(f"dramatiq:__acks__.{worker.broker_id}.{QUEUE}"),
                         redis.zscore(HEARTBEATS, worker.broker_id))


def test_recover_leaves_a_live_workers_messages_alone(redis: fakeredis.FakeRedis) -> None:
    producer, worker, survivor = relay_broker(redis), relay_broker(redis), relay_broker(redis)
    enqueue(producer)
    worker.do_fetch(QUEUE, 1)  # heartbeat: now

    survivor.recover([QUEUE])

    assert [] == ready(redis)


def test_recover_does_not_requeue_an_acked_message(redis: fakeredis.FakeRedis) -> None:
    producer, worker, survivor = relay_broker(redis), relay_broker(redis), relay_broker(redis)
    message_id = enqueue(producer)
    worker.do_fetch(QUEUE, 1)
    worker.do_ack(QUEUE, message_id)
    last_seen_long_ago(redis, worker)

    survivor.recover([QUEUE])

    assert [] == ready(redis)


def test_recover_requeues_a_dead_workers_delayed_message(redis: fakeredis.FakeRedis) -> None:
    producer, worker, survivor = relay_broker(redis), relay_broker(redis), relay_broker(redis)
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name=QUEUE, actor_name="deliver_high", args=("111", []), kwargs={}, options={})
    delayed_id = producer.enqueue(message, delay=60_000).options["redis_message_id"]
    worker.do_fetch(f"{QUEUE}.DQ", 1)
    last_seen_long_ago(redis, worker)

    survivor.recover([QUEUE])

    assert ([delayed_id], []) == (ready(redis, f"{QUEUE}.DQ"), ready(redis))


def test_recover_refreshes_the_callers_heartbeat(redis: fakeredis.FakeRedis) -> None:
    survivor = relay_broker(redis)
    before_ms = int(time.time() * 1000)

    survivor.recover([QUEUE])

    score = redis.zscore(HEARTBEATS, survivor.broker_id)
    assert True is (score is not None and score >= before_ms)


def test_recover_only_touches_the_named_queues(redis: fakeredis.FakeRedis) -> None:
    producer, worker, survivor = relay_broker(redis), relay_broker(redis), relay_broker(redis)
    producer.declare_queue("relay_low")
    enqueue(producer, "relay_low")
    worker.do_fetch("relay_low", 1)
    last_seen_long_ago(redis, worker)

    survivor.recover([QUEUE])

    assert [] == ready(redis, "relay_low")


def test_recover_without_maintenance_only_refreshes_the_heartbeat(
        redis: fakeredis.FakeRedis) -> None:
    producer, worker, survivor = relay_broker(redis), relay_broker(redis), relay_broker(redis)
    enqueue(producer)
    worker.do_fetch(QUEUE, 1)
    last_seen_long_ago(redis, worker)

    survivor.recover([QUEUE], maintenance=False)

    assert ([], True) == (ready(redis), redis.zscore(HEARTBEATS, survivor.broker_id) is not None)


# -- RecoveryGate: no requeue of live workers right after an outage --------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gate_with_clock() -> tuple[RecoveryGate, FakeClock]:
    clock = FakeClock()
    return RecoveryGate(heartbeat_timeout_s=10, clock=clock), clock


def beat_for(gate: RecoveryGate, clock: FakeClock, seconds: int) -> bool:
    """Heartbeats every second for ``seconds``; whether maintenance was allowed at the end."""
    allowed = False
    for _ in range(seconds):
        clock.now += 1
        allowed = gate.allows_maintenance()
        gate.heartbeat_written()
    return allowed


def test_gate_waits_one_heartbeat_timeout_after_start() -> None:
    gate, clock = gate_with_clock()

    assert (False, True) == (beat_for(gate, clock, 9), beat_for(gate, clock, 1))


def test_gate_closes_after_heartbeats_paused_and_reopens_a_timeout_later() -> None:
    gate, clock = gate_with_clock()
    beat_for(gate, clock, 20)

    clock.now += 30  # Redis unreachable: no heartbeat for 30 s
    allowed_on_return = gate.allows_maintenance()
    gate.heartbeat_written()

    assert (False, False, True) == (allowed_on_return, beat_for(gate, clock, 9),
                                    beat_for(gate, clock, 1))


def test_gate_stays_open_through_ordinary_heartbeat_jitter() -> None:
    gate, clock = gate_with_clock()
    beat_for(gate, clock, 20)

    clock.now += 4  # a slow pump pass, under half a heartbeat timeout

    assert True is gate.allows_maintenance()


# -- enqueueing while Redis is unreachable ------------------------------------------------------
class UnreachableFor:
    """A broker whose enqueue fails with a connection error ``failures`` times, then works."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.enqueued: list[tuple[str, int | None]] = []

    def enqueue(self, message: dramatiq.Message[None], *, delay: int | None = None
                ) -> dramatiq.Message[None]:
        if self.failures:
            self.failures -= 1
            raise redis_errors.ConnectionError("Error 111 connecting to Redis.")
        self.enqueued.append((message.message_id, delay))
        return message


def a_message() -> dramatiq.Message[None]:
    return dramatiq.Message(queue_name=QUEUE, actor_name="deliver_high", args=("111", []),
                            kwargs={}, options={})


def test_enqueue_patiently_waits_for_redis() -> None:
    broker, message, sleeps = UnreachableFor(3), a_message(), []

    enqueue_patiently(broker, message, 500, sleep=sleeps.append)  # type: ignore[arg-type]

    assert ([(message.message_id, 500)], 3) == (broker.enqueued, len(sleeps))


def test_patient_retries_enqueue_the_retry_once_redis_answers() -> None:
    stub = StubBroker()
    actor = dramatiq.actor(broker=stub, queue_name=QUEUE, actor_name="deliver_high")(
        lambda pixel_id, items: None)
    broker = UnreachableFor(2)
    broker.get_actor = stub.get_actor  # type: ignore[attr-defined]
    message = actor.message("111", [])
    retries = PatientRetries(min_backoff=100, max_backoff=200, retry_when=retry_when(10))

    retries.after_process_message(broker, MessageProxy(message),  # type: ignore[arg-type]
                                  exception=TransientError("Meta is down"))  # 0.6 s of waits

    assert [message.message_id] == [m for m, _ in broker.enqueued]


# -- stranded messages: fetched in Redis, never received ------------------------------------------
def fetch_with_lost_reply(broker: RelayBroker, queue: str = QUEUE) -> None:
    """What a fetch does in Redis when its reply never arrives (Redis shut down after it)."""
    broker._dispatch("fetch")(queue, 16)


def acks(redis: fakeredis.FakeRedis, broker: RelayBroker, queue: str = QUEUE) -> set[bytes]:
    return set(redis.smembers(f"dramatiq:__acks__.{broker.broker_id}.{queue}"))


def test_a_message_whose_fetch_reply_was_lost_is_requeued_on_the_second_check(
        redis: fakeredis.FakeRedis) -> None:
    producer, worker = relay_broker(redis), relay_broker(redis)
    message_id = enqueue(producer)
    fetch_with_lost_reply(worker)

    first, second = worker.rescue_stranded([QUEUE]), worker.rescue_stranded([QUEUE])

    assert (0, 1, [message_id], set()) == (first, second, ready(redis), acks(redis, worker))


def test_a_message_this_process_received_is_not_requeued(redis: fakeredis.FakeRedis) -> None:
    producer, worker = relay_broker(redis), relay_broker(redis)
    enqueue(producer)
    worker.do_fetch(QUEUE, 16)

    rescued = [worker.rescue_stranded([QUEUE]) for _ in range(3)]

    assert ([0, 0, 0], []) == (rescued, ready(redis))


def test_acked_messages_are_forgotten(redis: fakeredis.FakeRedis) -> None:
    producer, worker = relay_broker(redis), relay_broker(redis)
    message_id = enqueue(producer)
    worker.do_fetch(QUEUE, 16)

    worker.do_ack(QUEUE, message_id)

    assert set() == worker._held[QUEUE]


def test_a_stranded_delayed_message_goes_back_to_the_delay_queue(
        redis: fakeredis.FakeRedis) -> None:
    producer, worker = relay_broker(redis), relay_broker(redis)
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name=QUEUE, actor_name="deliver_high", args=("111", []), kwargs={}, options={})
    delayed_id = producer.enqueue(message, delay=60_000).options["redis_message_id"]
    fetch_with_lost_reply(worker, f"{QUEUE}.DQ")

    worker.rescue_stranded([QUEUE])
    worker.rescue_stranded([QUEUE])

    assert [delayed_id] == ready(redis, f"{QUEUE}.DQ")


def test_an_enqueue_sent_again_after_a_lost_reply_queues_the_message_once(
        redis: fakeredis.FakeRedis) -> None:
    broker = relay_broker(redis)
    message = a_message().copy(options={"redis_message_id": "rid-1"})

    for _ in range(2):  # the client's retry sends the same command again
        broker.do_enqueue(QUEUE, "rid-1", message.encode())

    assert ["rid-1"] == ready(redis)


def test_enqueue_still_stores_what_dramatiq_expects(redis: fakeredis.FakeRedis) -> None:
    broker = relay_broker(redis)
    message_id = enqueue(broker)

    [payload] = broker.do_fetch(QUEUE, 16)

    assert message_id == dramatiq.Message.decode(payload).options["redis_message_id"]


# -- a consumer replaced after a connection error --------------------------------------------------
def test_a_new_consumer_requeues_what_the_dropped_one_had_not_handed_on(
        redis: fakeredis.FakeRedis) -> None:
    producer, worker = relay_broker(redis), relay_broker(redis)
    ids = [enqueue(producer) for _ in range(3)]
    consumer = worker.consume(QUEUE, prefetch=16, timeout=100)
    running = next(consumer)  # handed to a worker thread; the other two stay in the cache
    assert running is not None

    worker.consume(QUEUE, prefetch=16, timeout=100)  # after a connection error

    assert (sorted(ids[1:]), {running.options["redis_message_id"].encode()}) == (
        sorted(ready(redis)), acks(redis, worker))


def test_a_new_delay_queue_consumer_requeues_every_waiting_message(
        redis: fakeredis.FakeRedis) -> None:
    producer, worker = relay_broker(redis), relay_broker(redis)
    delayed_id = producer.enqueue(a_message(), delay=60_000).options["redis_message_id"]
    consumer = worker.consume(f"{QUEUE}.DQ", prefetch=16, timeout=100)
    assert next(consumer) is not None  # now waiting for its time in the consumer thread

    worker.consume(f"{QUEUE}.DQ", prefetch=16, timeout=100)

    assert [delayed_id] == ready(redis, f"{QUEUE}.DQ")


def test_a_message_acked_by_a_thread_is_not_requeued_later(redis: fakeredis.FakeRedis) -> None:
    producer, worker = relay_broker(redis), relay_broker(redis)
    enqueue(producer)
    consumer = worker.consume(QUEUE, prefetch=16, timeout=100)
    message = next(consumer)
    assert message is not None
    consumer.ack(message)

    worker.consume(QUEUE, prefetch=16, timeout=100)

    assert ([], set(), set()) == (ready(redis), worker._held[QUEUE], worker._with_threads[QUEUE])

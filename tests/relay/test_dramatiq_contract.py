"""Contract of relay._dramatiq with the installed Dramatiq: every private fact the relay's
recovery leans on, checked on a real Redis server, so that an upgrade that changes one fails
here and not in production.

When one of these fails after a Dramatiq upgrade: read the new ``dramatiq/brokers/redis.py``
and ``brokers/redis/dispatch.lua``, adapt ``relay/_dramatiq.py`` (and the BATCH script in
``relay/inbox.py`` if the message shape moved), then move ``VERIFIED_VERSION`` and the pin in
``pyproject.toml`` together.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Iterator
from importlib import metadata

import dramatiq
import dramatiq.broker
import msgspec
import pytest
from dramatiq.brokers.redis import RedisBroker
from packaging.requirements import Requirement
from packaging.version import Version
from redis import Redis

from relay import _dramatiq, keys
from relay.broker import RelayBroker
from relay.inbox import Batcher, EventWrite, store_sync
from tests.support import ROOT, RedisServer

QUEUE = "relay_contract"
HEARTBEAT_TIMEOUT_MS = 10_000


@pytest.fixture
def client(module_redis: RedisServer) -> Iterator[Redis]:
    redis = module_redis.client()
    redis.flushdb()  # the module's own private server
    yield redis
    redis.close()


@pytest.fixture(autouse=True)
def keep_global_broker() -> Iterator[None]:
    previous = dramatiq.broker.global_broker
    yield
    dramatiq.broker.global_broker = previous


def broker_on(client: Redis) -> RelayBroker:
    broker = RelayBroker(client=client, namespace=keys.DRAMATIQ_NAMESPACE,
                         heartbeat_timeout=HEARTBEAT_TIMEOUT_MS, maintenance_chance=0,
                         middleware=[])
    broker.declare_queue(QUEUE)
    return broker


def enqueue(broker: RedisBroker, delay_ms: int | None = None) -> str:
    # Event payloads travel as JSON strings inside the message: their quotes are escaped.
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name=QUEUE, actor_name="deliver", args=("111", ['{"redis_message_id":"no"}']),
        kwargs={}, options={})
    return str(broker.enqueue(message, delay=delay_ms).options["redis_message_id"])


# -- the version ----------------------------------------------------------------------------------
def test_installed_dramatiq_is_the_verified_minor_version() -> None:
    installed = Version(metadata.version("dramatiq"))

    assert _dramatiq.VERIFIED_VERSION == f"{installed.major}.{installed.minor}"


def test_pyproject_pins_dramatiq_to_the_verified_minor_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    [pin] = [Requirement(d) for d in project["dependencies"]
             if Requirement(d).name == "dramatiq"]
    major, minor = (int(p) for p in _dramatiq.VERIFIED_VERSION.split("."))

    assert (True, False) == (pin.specifier.contains(f"{major}.{minor}.0"),
                             pin.specifier.contains(f"{major}.{minor + 1}.0"))


# -- the classes ----------------------------------------------------------------------------------
def test_the_broker_builds_its_consumers_from_consumer_class(client: Redis) -> None:
    broker = broker_on(client)

    consumer = broker.consume(QUEUE, prefetch=1, timeout=10)

    assert isinstance(consumer, _dramatiq.RedisConsumer)
    assert type(consumer) is broker.consumer_class
    consumer.close()


def test_the_consumer_has_the_methods_the_relay_overrides() -> None:
    for name in ("__next__", "ack", "nack", "requeue"):
        assert name in vars(_dramatiq.RedisConsumer), name


def test_the_consumer_hands_out_messages_with_their_redis_message_id(client: Redis) -> None:
    broker = broker_on(client)
    message_id = enqueue(broker)
    consumer = broker.consume(QUEUE, prefetch=1, timeout=10)

    received = next(consumer)

    assert message_id == received.options["redis_message_id"]
    consumer.close()


# -- the layout -----------------------------------------------------------------------------------
def test_enqueue_stores_the_payload_and_readies_the_id(client: Redis) -> None:
    message_id = enqueue(broker_on(client))

    payload = client.hget(_dramatiq.messages(QUEUE), message_id)
    assert ([message_id.encode()], {message_id}) == (
        client.lrange(_dramatiq.queue(QUEUE), 0, -1), _dramatiq.redis_message_ids([payload]))


def test_a_delayed_message_waits_in_the_delay_queue(client: Redis) -> None:
    message_id = enqueue(broker_on(client), delay_ms=60_000)

    assert (True, 0) == (
        client.hexists(_dramatiq.messages(_dramatiq.delay_queue(QUEUE)), message_id),
        client.llen(_dramatiq.queue(QUEUE)))


def test_fetch_returns_payloads_and_records_them_in_the_ack_set(client: Redis) -> None:
    broker = broker_on(client)
    message_id = enqueue(broker)

    payloads = _dramatiq.dispatch(broker, "fetch")(QUEUE, 10)

    assert ({message_id}, {message_id.encode()}, True) == (
        _dramatiq.redis_message_ids(payloads),
        client.smembers(_dramatiq.acks(broker.broker_id, QUEUE)),
        client.zscore(_dramatiq.HEARTBEATS, broker.broker_id) is not None)


def test_ack_forgets_the_message(client: Redis) -> None:
    broker = broker_on(client)
    message_id = enqueue(broker)
    _dramatiq.dispatch(broker, "fetch")(QUEUE, 10)

    _dramatiq.dispatch(broker, "ack")(QUEUE, message_id)

    assert (0, 0) == (client.scard(_dramatiq.acks(broker.broker_id, QUEUE)),
                      client.hlen(_dramatiq.messages(QUEUE)))


def test_requeue_readies_a_held_message_again(client: Redis) -> None:
    broker = broker_on(client)
    message_id = enqueue(broker)
    _dramatiq.dispatch(broker, "fetch")(QUEUE, 10)

    _dramatiq.dispatch(broker, "requeue")(QUEUE, message_id)

    assert ([message_id.encode()], 0) == (client.lrange(_dramatiq.queue(QUEUE), 0, -1),
                                          client.scard(_dramatiq.acks(broker.broker_id, QUEUE)))


@pytest.mark.parametrize("name", [QUEUE, _dramatiq.delay_queue(QUEUE)])
def test_nack_moves_the_message_to_the_canonical_dead_queue(client: Redis, name: str) -> None:
    broker = broker_on(client)
    message_id = enqueue(broker, delay_ms=None if name == QUEUE else 60_000)
    _dramatiq.dispatch(broker, "fetch")(name, 10)

    _dramatiq.dispatch(broker, "nack")(name, message_id)

    assert (_dramatiq.dead_queue(QUEUE), True, True) == (
        _dramatiq.dead_queue(name),
        client.zscore(_dramatiq.dead_queue(QUEUE), message_id) is not None,
        client.hexists(_dramatiq.dead_messages(QUEUE), message_id))


@pytest.mark.parametrize(("maintenance", "expected_ready"), [(True, 1), (False, 0)])
def test_maintain_returns_a_silent_brokers_messages_only_with_maintenance(
        client: Redis, maintenance: bool, expected_ready: int) -> None:
    producer, dead, survivor = broker_on(client), broker_on(client), broker_on(client)
    enqueue(producer)
    _dramatiq.dispatch(dead, "fetch")(QUEUE, 10)
    now_ms = int(time.time() * 1000)
    client.zadd(_dramatiq.HEARTBEATS, {dead.broker_id: now_ms - HEARTBEAT_TIMEOUT_MS - 1000})

    _dramatiq.maintain(survivor, QUEUE, now_ms, maintenance)

    assert (expected_ready, True) == (
        client.llen(_dramatiq.queue(QUEUE)),
        client.zscore(_dramatiq.HEARTBEATS, survivor.broker_id) == now_ms)


def test_acks_pattern_finds_every_processs_ack_set(client: Redis) -> None:
    first, second = broker_on(client), broker_on(client)
    enqueue(first)
    enqueue(first)
    _dramatiq.dispatch(first, "fetch")(QUEUE, 1)
    _dramatiq.dispatch(second, "fetch")(QUEUE, 1)

    found = {k.decode() for k in client.scan_iter(_dramatiq.acks_pattern(QUEUE))}

    assert {_dramatiq.acks(first.broker_id, QUEUE), _dramatiq.acks(second.broker_id, QUEUE)} \
        == found


# -- the message JSON -----------------------------------------------------------------------------
def test_an_encoded_message_has_exactly_the_fields_the_batch_script_writes() -> None:
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name=QUEUE, actor_name="deliver", args=(), kwargs={}, options={})

    assert _dramatiq.MESSAGE_FIELDS == set(msgspec.json.decode(message.encode()))


def test_a_message_built_in_lua_decodes_and_runs_like_dramatiqs_own(client: Redis) -> None:
    broker = broker_on(client)
    store_sync(client, [EventWrite(QUEUE, "111", "111:Lead:e1", 1, b'{"event":"e1"}')], 3600)
    Batcher(client, QUEUE, "deliver", max_batch=10, max_ready=10).run_once()
    [message_id] = [i.decode() for i in client.lrange(_dramatiq.queue(QUEUE), 0, -1)]
    payload = client.hget(_dramatiq.messages(QUEUE), message_id)

    message = dramatiq.Message.decode(payload)
    consumer = broker.consume(QUEUE, prefetch=1, timeout=10)
    received = next(consumer)

    assert (_dramatiq.MESSAGE_FIELDS, {message_id}, ("111", ['{"event":"e1"}'])) == (
        set(msgspec.json.decode(payload)), _dramatiq.redis_message_ids([payload]),
        tuple(message.args))
    assert message_id == received.options["redis_message_id"] == received.message_id
    consumer.close()

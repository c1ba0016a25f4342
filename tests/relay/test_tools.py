"""relay.tools: ``pixelrelay trace``, ``audit`` and ``requeue`` against a fake Redis."""

from __future__ import annotations

import io
import time

import fakeredis
import msgspec
import pytest

from relay import keys
from relay.config import Settings
from relay.deadletters import DeadLetters
from relay.events import Envelope, decode_envelope, encode
from relay.inbox import Batcher, EventWrite, store_sync
from relay.ledger import Entry, Ledger
from relay.tools import audit, requeue, run_audit, trace
from tests.relay.factories import PIXEL, envelope, make_settings

QUEUE = "relay_high"  # Purchase is a high-priority event
TTL_S = 7 * 86_400


@pytest.fixture
def settings() -> Settings:
    return make_settings()


def accept(redis: fakeredis.FakeRedis, env: Envelope) -> None:
    """What the collector's STORE does: the event is in its inbox and recorded as accepted."""
    store_sync(redis, [EventWrite(QUEUE, env.pixel_id, env.dedup_key, env.received_ms,
                                  encode(env))], TTL_S)


def take_out_of_inbox(redis: fakeredis.FakeRedis) -> None:
    """What a worker does after the batcher: the inbox is drained and the message acked."""
    redis.delete(keys.inbox(QUEUE, PIXEL), keys.inbox_pixels(QUEUE))


def record(redis: fakeredis.FakeRedis, env: Envelope, state: str, **detail: object) -> None:
    Ledger(redis, TTL_S).record([Entry(env.dedup_key, env.event.event_id, env.pixel_id,
                                       env.event.event_name, state, dict(detail))])  # type: ignore[arg-type]


# -- trace ----------------------------------------------------------------------------------------
def test_trace_prints_the_state_and_life_of_an_event(redis: fakeredis.FakeRedis,
                                                     settings: Settings) -> None:
    env = envelope("order-1")
    accept(redis, env)
    record(redis, env, "attempt", code=2)
    record(redis, env, "delivered", fbtrace_id="T-1")
    out = io.StringIO()

    code = trace(settings, "order-1", out, client=redis)

    lines = out.getvalue().splitlines()
    assert (0, f"Purchase order-1 for pixel {PIXEL}: delivered") == (code, lines[0])
    assert ["accepted by the collector", "attempt  (code=2)", "delivered  (fbtrace_id=T-1)"] == [
        line.split("  ", 2)[-1] for line in lines[1:]]


def test_trace_shows_every_pixel_of_an_event_id(redis: fakeredis.FakeRedis,
                                                settings: Settings) -> None:
    record(redis, envelope("order-1"), "delivered")
    record(redis, envelope("order-1", pixel_id="5555555555"), "dead", kind="rejected")
    out = io.StringIO()

    trace(settings, "order-1", out, client=redis)

    headers = [line for line in out.getvalue().splitlines() if not line.startswith(" ")]
    assert [f"Purchase order-1 for pixel {PIXEL}: delivered",
            "Purchase order-1 for pixel 5555555555: dead"] == headers


def test_trace_of_an_event_only_accepted_says_waiting(redis: fakeredis.FakeRedis,
                                                      settings: Settings) -> None:
    accept(redis, envelope("order-1"))
    out = io.StringIO()

    trace(settings, "order-1", out, client=redis)

    assert f"Purchase order-1 for pixel {PIXEL}: waiting" == out.getvalue().splitlines()[0]


def test_trace_of_an_unknown_event_returns_1(redis: fakeredis.FakeRedis,
                                             settings: Settings) -> None:
    out = io.StringIO()

    code = trace(settings, "nope", out, client=redis)

    assert (1, "no event with event_id nope is known (kept 7 days)\n") == (code, out.getvalue())


# -- audit ----------------------------------------------------------------------------------------
def test_audit_counts_final_states(redis: fakeredis.FakeRedis, settings: Settings) -> None:
    for event_id, state in [("d1", "delivered"), ("d2", "delivered"), ("x1", "dead"),
                            ("u1", "duplicate")]:
        env = envelope(event_id)
        accept(redis, env)
        record(redis, env, state)
    take_out_of_inbox(redis)

    report = run_audit(settings, redis, hours=1)

    assert (4, {"delivered": 2, "dead": 1, "duplicate": 1}, []) == (
        report.accepted, dict(report.states), report.unaccounted)


def test_event_in_the_inbox_is_waiting(redis: fakeredis.FakeRedis, settings: Settings) -> None:
    accept(redis, envelope("w1"))

    assert {"waiting": 1} == dict(run_audit(settings, redis, hours=1).states)


def test_event_inside_a_batch_message_is_waiting(redis: fakeredis.FakeRedis,
                                                 settings: Settings) -> None:
    accept(redis, envelope("w1"))
    Batcher(redis, QUEUE, "deliver_high", 1000, 16).run_once()

    assert ({"waiting": 1}, 0) == (dict(run_audit(settings, redis, hours=1).states),
                                   redis.llen(keys.inbox(QUEUE, PIXEL)))


def test_event_inside_a_delayed_batch_message_is_waiting(redis: fakeredis.FakeRedis,
                                                         settings: Settings) -> None:
    env = envelope("w1")
    accept(redis, env)
    take_out_of_inbox(redis)
    message = {"queue_name": f"{QUEUE}.DQ", "actor_name": "deliver_high",
               "args": [PIXEL, [encode(env).decode()]], "kwargs": {}, "options": {},
               "message_id": "m1", "message_timestamp": 0}
    redis.hset(f"{keys.dramatiq_queue(QUEUE)}.DQ.msgs", "m1", msgspec.json.encode(message))

    assert {"waiting": 1} == dict(run_audit(settings, redis, hours=1).states)


@pytest.mark.parametrize("state", ["deferred", "requeued"])
def test_event_deferred_or_requeued_is_waiting(redis: fakeredis.FakeRedis, settings: Settings,
                                               state: str) -> None:
    env = envelope("w1")
    accept(redis, env)
    take_out_of_inbox(redis)
    record(redis, env, state)

    assert {"waiting": 1} == dict(run_audit(settings, redis, hours=1).states)


def test_accepted_event_with_no_trace_is_unaccounted(redis: fakeredis.FakeRedis,
                                                     settings: Settings) -> None:
    lost, fine = envelope("lost"), envelope("fine")
    for env in (lost, fine):
        accept(redis, env)
    take_out_of_inbox(redis)
    record(redis, fine, "delivered")

    report = run_audit(settings, redis, hours=1)

    assert ([lost.dedup_key], {"delivered": 1}) == (report.unaccounted, dict(report.states))


def test_recent_event_with_no_trace_is_waiting_while_settling(redis: fakeredis.FakeRedis,
                                                               settings: Settings) -> None:
    accept(redis, envelope("new"))
    take_out_of_inbox(redis)

    report = run_audit(settings, redis, hours=1, settle_s=60)

    assert ({"waiting": 1}, []) == (dict(report.states), report.unaccounted)


def test_audit_ignores_events_older_than_its_window(redis: fakeredis.FakeRedis,
                                                    settings: Settings) -> None:
    accept(redis, envelope("old", received_ms=int(time.time() * 1000) - 5 * 3_600_000))
    take_out_of_inbox(redis)

    assert 0 == run_audit(settings, redis, hours=2).accepted


def test_audit_returns_1_and_names_unaccounted_events(redis: fakeredis.FakeRedis,
                                                      settings: Settings) -> None:
    lost = envelope("lost")
    accept(redis, lost)
    take_out_of_inbox(redis)
    out = io.StringIO()

    code = audit(settings, out, hours=1, client=redis)

    assert (1, ["1 events are neither delivered, waiting nor dead:", f"  {lost.dedup_key}"]) == (
        code, out.getvalue().splitlines()[1:])


def test_audit_returns_0_when_everything_is_accounted_for(redis: fakeredis.FakeRedis,
                                                         settings: Settings) -> None:
    env = envelope("d1")
    accept(redis, env)
    take_out_of_inbox(redis)
    record(redis, env, "delivered")
    out = io.StringIO()

    code = audit(settings, out, hours=1, client=redis)

    assert (0, ["1 events accepted in the last 1 h: 1 delivered",
                "every accepted event is accounted for"]) == (code, out.getvalue().splitlines())


def test_audit_of_nothing_says_none(redis: fakeredis.FakeRedis, settings: Settings) -> None:
    out = io.StringIO()

    code = audit(settings, out, hours=1, client=redis)

    assert (0, "0 events accepted in the last 1 h: none") == (
        code, out.getvalue().splitlines()[0])


# -- requeue --------------------------------------------------------------------------------------
def dead_letter(redis: fakeredis.FakeRedis, *event_ids: str) -> list[Envelope]:
    envs = [envelope(i) for i in event_ids]
    DeadLetters(redis, TTL_S).add(envs, {"kind": "rejected", "code": 190})
    return envs


def inbox(redis: fakeredis.FakeRedis) -> list[str]:
    return [decode_envelope(raw).event.event_id
            for raw in redis.lrange(keys.inbox(QUEUE, PIXEL), 0, -1)]


def test_requeue_moves_named_letters_back_to_the_inbox(redis: fakeredis.FakeRedis,
                                                       settings: Settings) -> None:
    envs = dead_letter(redis, "e1", "e2")
    out = io.StringIO()

    code = requeue(settings, out, [envs[1].dedup_key], client=redis)

    assert (0, ["e2"], 1, "requeued 1 of 1 dead letters\n") == (
        code, inbox(redis), DeadLetters(redis, TTL_S).count(), out.getvalue())


def test_requeue_all_moves_every_letter(redis: fakeredis.FakeRedis, settings: Settings) -> None:
    dead_letter(redis, "e1", "e2", "e3")

    code = requeue(settings, io.StringIO(), [], everything=True, client=redis)

    assert (0, ["e1", "e2", "e3"]) == (code, sorted(inbox(redis)))


def test_requeue_uses_the_queue_of_the_event_name(redis: fakeredis.FakeRedis,
                                                  settings: Settings) -> None:
    env = envelope("p1", event_name="PageView")
    DeadLetters(redis, TTL_S).add([env], {"kind": "rejected"})

    requeue(settings, io.StringIO(), [env.dedup_key], client=redis)

    assert 1 == redis.llen(keys.inbox("relay_low", PIXEL))


def test_requeue_of_an_unknown_letter_returns_1(redis: fakeredis.FakeRedis,
                                                settings: Settings) -> None:
    envs = dead_letter(redis, "e1")
    out = io.StringIO()

    code = requeue(settings, out, [envs[0].dedup_key, f"{PIXEL}:Purchase:nope"], client=redis)

    assert (1, [f"{PIXEL}:Purchase:nope: no such dead letter",
                "requeued 1 of 2 dead letters"], ["e1"]) == (
        code, out.getvalue().splitlines(), inbox(redis))


def test_requeue_of_a_malformed_key_returns_1(redis: fakeredis.FakeRedis,
                                              settings: Settings) -> None:
    out = io.StringIO()

    code = requeue(settings, out, ["not-a-key"], client=redis)

    assert (1, "not-a-key: not a dead letter key (pixel:event_name:event_id)") == (
        code, out.getvalue().splitlines()[0])


def test_requeue_of_nothing_returns_1(redis: fakeredis.FakeRedis, settings: Settings) -> None:
    out = io.StringIO()

    code = requeue(settings, out, [], client=redis)

    assert (1, "nothing to requeue: name dead letter keys or pass --all\n") == (
        code, out.getvalue())


def test_trace_of_an_event_id_with_glob_characters_matches_only_itself(
        redis: fakeredis.FakeRedis, settings: Settings) -> None:
    # Given records the collector never named (from before the ledger's names): the CLI searches
    for event_id in ("a*", "abc"):
        record(redis, envelope(event_id), "delivered", fbtrace_id=f"T-{event_id}")
    out = io.StringIO()

    code = trace(settings, "a*", out, client=redis)

    assert (0, [f"Purchase a* for pixel {PIXEL}: delivered"]) == (
        code, [line for line in out.getvalue().splitlines() if " for pixel " in line])

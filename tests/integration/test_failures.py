"""What goes wrong on the way to Meta: invalid events, errors, retries, duplicates, throttling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relay import keys
from relay.deadletters import DeadLetters
from relay.events import UserData
from relay.limiter import PixelLimiter
from tests.integration.conftest import (
    LEDGER_TTL_S,
    FakeMeta,
    RelayStack,
    make_envelope,
    sha256,
)
from tests.support import DEMO_PIXEL, wait_for

OTHER_PIXEL = "9876543210"
SECOND_PIXEL = f"""
[[pixels]]
id = "{OTHER_PIXEL}"
access_token_env = "PIXELRELAY_TEST_TOKEN"
"""


def _reasons(stack: RelayStack) -> dict[str, dict[str, Any]]:
    letters = DeadLetters(stack.client(), LEDGER_TTL_S).list(0, 1000)
    return {d.envelope.event.event_id: d.reason for d in letters}


def _states_in_life(stack: RelayStack, dedup_key: str) -> list[str]:
    return [entry["state"] for entry in stack.ledger().life(dedup_key)]


def test_one_bad_event_is_dead_lettered_and_its_batch_mates_delivered(
    fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]
) -> None:
    stack = relay_stack(fake_meta())
    good = [make_envelope("Purchase") for _ in range(8)]
    # The relay's own validation catches this one before sending ...
    no_agent = make_envelope("Purchase", "no-agent", user_data=UserData(em=sha256("x@y.example")))
    # ... but not this one: only Meta (the fake) checks custom_data, and refuses the batch.
    bad_currency = make_envelope("Purchase", "bad-currency",
                                 custom_data={"currency": "dollars", "value": 3})
    batch = [*good[:4], no_agent, *good[4:6], bad_currency, *good[6:]]
    stack.inject(batch)  # before any worker runs, so all ten leave in one batch

    stack.worker()

    ids = stack.wait_delivered(good)
    wait_for(lambda: 2 == len(_reasons(stack)), 15, what="two dead letters")
    reasons = _reasons(stack)
    assert {e.event.event_id: 1 for e in good} == dict(ids)
    # Meta refused the nine sent together; halving isolated the culprit, the rest went through.
    received = stack.meta.received()
    assert 8 == sum(received["batch_sizes"])
    assert received["rejected"]["100"] >= 2
    assert "invalid" == reasons["no-agent"]["kind"]
    assert "user_data.client_user_agent is required for website events" == (
        reasons["no-agent"]["message"])
    assert ("rejected", 100) == (reasons["bad-currency"]["kind"], reasons["bad-currency"]["code"])
    assert "custom_data.currency must be a 3-letter ISO 4217 code" in (
        reasons["bad-currency"]["message"])
    wait_for(lambda: {"delivered": 8, "dead": 2} == stack.states(batch), 10,
             what="ledger states")


def test_transient_errors_are_retried_until_meta_recovers(
    fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]
) -> None:
    meta = fake_meta(FAKEMETA_ERROR_RATES="2:1.0")
    stack = relay_stack(meta)
    events = [make_envelope("Purchase") for _ in range(20)]
    stack.worker()
    stack.inject(events)

    # When: Meta answers code 2 ("temporary downtime") three times, then recovers.
    wait_for(lambda: meta.received()["rejected"].get("2", 0) >= 3, 15,
             what="three refused attempts")
    meta.faults(error_rates={})

    ids = stack.wait_delivered(events)
    assert {e.event.event_id: 1 for e in events} == dict(ids)
    wait_for(lambda: {"delivered": 20} == stack.states(events), 10, what="ledger 'delivered'")
    life = stack.ledger().life(events[0].dedup_key)
    attempts = [e for e in life if e["state"] == "attempt"]
    assert len(attempts) >= 3, life
    assert {("transient", 2)} == {(e["outcome"], e["code"]) for e in attempts}
    assert [1, 2, 3] == [e["attempt"] for e in attempts][:3]
    assert "delivered" == life[-1]["state"] and life[-1]["attempt"] == len(attempts) + 1
    assert {} == _reasons(stack)
    trace = stack.tool("trace", events[0].event.event_id).stdout
    assert trace.count("  attempt  (") == len(attempts) and "code=2" in trace, trace
    assert trace.splitlines()[0].endswith(": delivered"), trace


def test_an_invalid_token_pauses_the_pixel_instead_of_dead_lettering(
    fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]
) -> None:
    meta = fake_meta(FAKEMETA_TOKENS="some-other-token")
    stack = relay_stack(meta)
    events = [make_envelope("Purchase") for _ in range(5)]
    stack.inject(events)

    stack.worker()

    # Code 190 is about the token, not the batch: the pixel pauses (tests/integration/
    # test_outage.py), the events wait in the inbox, no retry is spent and none is dead.
    client = stack.client()
    wait_for(lambda: client.exists(keys.breaker(DEMO_PIXEL)), 15, what="the pause")
    wait_for(lambda: 5 == client.llen("pixelrelay:inbox:relay_high:" + DEMO_PIXEL)
             and 0 == stack.unacked("relay_high"), 15, what="the events back in the inbox")
    status = client.hgetall(keys.breaker(DEMO_PIXEL))
    assert (b"token", b"190") == (status[b"reason"], status[b"code"])
    assert {} == _reasons(stack)
    assert 0 == client.hlen("dramatiq:relay_high.DQ.msgs"), "no retry may be scheduled"
    life = stack.ledger().life(events[0].dedup_key)
    assert [("deferred", "paused", "token")] == [(e["state"], e["outcome"], e["reason"])
                                                 for e in life]
    # Either the batch met the 190 itself (its entry carries Meta's answer), or the worker's
    # token check (its own thread) paused the pixel first and the batch was held unsent.
    if "code" in life[0]:
        assert (190, "Invalid OAuth access token - Cannot parse access token") == (
            life[0]["code"], life[0]["error"])


def test_the_same_event_twice_reaches_meta_once(
    fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]
) -> None:
    stack = relay_stack(fake_meta())
    first = make_envelope("Purchase", "order-42")
    stack.worker()
    stack.inject([first])
    stack.wait_delivered([first])

    # When: the shop sends the same order again, as a separate request.
    again = make_envelope("Purchase", "order-42")
    stack.inject([again])

    wait_for(lambda: "duplicate" in _states_in_life(stack, first.dedup_key), 10,
             what="the second copy to be recorded as a duplicate")
    assert 1 == stack.meta.event_ids()["order-42"]
    assert 0 == stack.meta.pixel()["duplicates"]
    assert ["delivered", "duplicate"] == _states_in_life(stack, first.dedup_key)
    assert "delivered" == stack.ledger().state(first.dedup_key)
    # The audit and trace keep the first copy's acceptance time.
    assert first.received_ms == stack.ledger().event(first.dedup_key).received_ms


def test_a_throttled_pixel_slows_down_and_another_pixel_keeps_flowing(
    fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]
) -> None:
    meta = fake_meta(FAKEMETA_THROTTLE_EVENTS_PER_S="100")
    stack = relay_stack(meta, extra=SECOND_PIXEL)
    busy = [make_envelope("ViewContent") for _ in range(300)]
    stack.worker()

    # When: three batches of 100 for one pixel, faster than the 100 events/s Meta allows.
    for sent, start in enumerate(range(0, 300, 100), start=1):
        stack.inject(busy[start:start + 100])
        wait_for(lambda: meta.received()["requests"] >= sent, 15,  # noqa: B023 - called now
                 what=f"request {sent} to reach Meta")
    wait_for(lambda: meta.received()["rejected"].get("80004", 0) >= 1, 15,
             what="Meta to throttle the busy pixel")
    factor = PixelLimiter(stack.client()).factor(DEMO_PIXEL)
    other = [make_envelope("ViewContent", pixel_id=OTHER_PIXEL) for _ in range(20)]
    stack.inject(other)

    stack.wait_delivered(other, timeout_s=5, pixel_id=OTHER_PIXEL)
    busy_done_when_other_done = stack.meta.pixel()["events"]
    ids = stack.wait_delivered(busy, timeout_s=60)

    print(f"factor after the first throttle: {factor}; busy pixel had "
          f"{busy_done_when_other_done}/300 when the other pixel's 20 were through")
    assert factor < 1.0
    assert busy_done_when_other_done < 300
    assert {e.event.event_id: 1 for e in busy} == dict(ids)
    assert {} == _reasons(stack)
    assert 0 == stack.client().zcard("dramatiq:relay_normal.XQ")
    throttled = [e for e in stack.ledger().life(busy[-1].dedup_key) if e["state"] == "deferred"]
    assert throttled and {("throttled", 80004)} == {(e["outcome"], e["code"]) for e in throttled}

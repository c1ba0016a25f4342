"""The happy path through real processes: inbox -> worker -> fake Meta; batching; trace; audit."""

from __future__ import annotations

import time
from collections.abc import Callable

from relay.events import UserData
from tests.integration.conftest import FakeMeta, RelayStack, make_envelope, sha256
from tests.support import wait_for

LONE_EVENT_LIMIT_S = 1.5


def test_injected_events_are_delivered_once_and_audited(
    fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]
) -> None:
    stack = relay_stack(fake_meta())
    events = ([make_envelope("PageView") for _ in range(30)]
              + [make_envelope("ViewContent") for _ in range(10)]
              + [make_envelope("Purchase", custom_data={"currency": "EUR", "value": 12.5})
                 for _ in range(10)])
    stack.worker()

    stack.inject(events)

    ids = stack.wait_delivered(events)
    assert {e.event.event_id: 1 for e in events} == dict(ids)
    assert 0 == stack.meta.pixel()["duplicates"]
    wait_for(lambda: {"delivered": 50} == stack.states(events), 10, what="ledger 'delivered'")
    audit = stack.tool("audit")
    assert 0 == audit.returncode, audit.stdout + audit.stderr
    assert "50 events accepted in the last 168 h: 50 delivered" in audit.stdout


def test_events_of_one_pixel_leave_in_batches_and_a_lone_event_within_a_linger(
    fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]
) -> None:
    stack = relay_stack(fake_meta())
    stack.worker()
    trickle = [make_envelope("ViewContent") for _ in range(100)]

    # When: 100 events arrive one store call at a time, as separate collector requests would.
    for envelope in trickle:
        stack.inject([envelope])
    stack.wait_delivered(trickle)

    sizes = stack.meta.received()["batch_sizes"]
    assert 100 == sum(sizes)
    assert max(sizes) > 1, sizes
    assert len(sizes) < 100 / 2, f"mean batch size {100 / len(sizes):.1f}: {sizes}"

    # When: one event arrives on its own, with nothing to wait for.
    lone = make_envelope("ViewContent")
    started = time.monotonic()
    stack.inject([lone])
    stack.wait_delivered([lone], timeout_s=10)
    took_s = time.monotonic() - started

    print(f"lone event delivered after {took_s * 1000:.0f} ms (linger 50 ms)")
    assert took_s < LONE_EVENT_LIMIT_S


def test_trace_names_each_state_of_an_events_life(
    fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]
) -> None:
    stack = relay_stack(fake_meta())
    delivered = make_envelope("Purchase", "order-trace-1")
    # A website event without client_user_agent: the relay's validation dead-letters it.
    no_agent = make_envelope("Lead", "lead-trace-1", user_data=UserData(em=sha256("a@b.example")))
    stack.worker()

    stack.inject([delivered, no_agent])
    stack.inject([delivered])  # the same Purchase again: a duplicate
    wait_for(lambda: stack.states([delivered, no_agent]) == {"delivered": 1, "dead": 1}
             and "duplicate" in [e["state"] for e in stack.ledger().life(delivered.dedup_key)],
             15, what="one delivered, one dead, one duplicate in the ledger")

    purchase = stack.tool("trace", "order-trace-1")
    lead = stack.tool("trace", "lead-trace-1")
    unknown = stack.tool("trace", "never-seen")

    assert 0 == purchase.returncode, purchase.stderr
    lines = purchase.stdout.splitlines()
    assert f"Purchase order-trace-1 for pixel {delivered.pixel_id}: delivered" == lines[0]
    assert "accepted by the collector" in lines[1]
    assert any("  delivered  (" in line and "fbtrace_id=" in line for line in lines), lines
    assert any("  duplicate  (" in line for line in lines), lines
    assert 0 == lead.returncode, lead.stderr
    assert f"Lead lead-trace-1 for pixel {no_agent.pixel_id}: dead" in lead.stdout
    assert "user_data.client_user_agent is required for website events" in lead.stdout
    assert 1 == unknown.returncode
    assert "no event with event_id never-seen is known" in unknown.stdout

"""The happy path through real processes: inbox -> worker -> fake Meta, ledger and audit."""

from __future__ import annotations

from collections.abc import Callable

from tests.integration.conftest import FakeMeta, RelayStack, make_envelope


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
    assert {"delivered": 50} == dict(stack.states(events))
    audit = stack.tool("audit")
    assert 0 == audit.returncode, audit.stdout + audit.stderr
    assert "50 delivered" in audit.stdout

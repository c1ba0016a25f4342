"""A Meta outage and a revoked token on the real thing: the pixel pauses, probes, resumes.

Real valkey, a real ``pixelrelay relay`` process and the fake Graph API with its faults
(``outage_s``, ``revoked_tokens``); the breaker's state is read with ``relay.breaker``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relay.breaker import PixelPause, pause_status
from relay.deadletters import DeadLetters
from tests.integration.conftest import LEDGER_TTL_S, FakeMeta, RelayStack, make_envelope
from tests.support import DEMO_PIXEL, DEMO_TOKEN, wait_for

OTHER_PIXEL = "9876543210"
OTHER_TOKEN = "other-pixels-token"
SECOND_PIXEL = f"""
[[pixels]]
id = "{OTHER_PIXEL}"
access_token_env = "PIXELRELAY_OTHER_TOKEN"
"""


def _pause(stack: RelayStack, pixel_id: str = DEMO_PIXEL) -> PixelPause:
    client = stack.client()
    try:
        return pause_status(client, [pixel_id])[pixel_id]
    finally:
        client.close()


def _refused(meta: FakeMeta, code: str) -> int:
    count: int = meta.received()["rejected"].get(code, 0)
    return count


def _steady(read: Callable[[], Any]) -> Any:
    """A reading taken twice in a row with the same result (no probe landed in between)."""
    return wait_for(lambda: (a := read()) == read() and a, 10, what="a steady reading")


def test_a_meta_outage_pauses_the_pixel_probes_and_resumes_in_full_batches(
    fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]
) -> None:
    meta = fake_meta()
    stack = relay_stack(meta)
    worker = stack.worker()
    meta.faults(outage_s=600)

    # When: batches meet the outage (the first one retried every 100 ms or so, then another)
    first = [make_envelope("Purchase"), make_envelope("Purchase")]
    stack.inject(first[:1])
    wait_for(lambda: _refused(meta, "2") >= 1, 15, what="the first refusal")
    stack.inject(first[1:])
    # Then the pixel pauses
    pause = wait_for(lambda: (p := _pause(stack)).paused and p, 15, what="the pause")
    assert ("meta", 2) == (pause.reason, pause.code)

    # While paused: a backlog waits in the inbox, one probe per interval goes out, nothing more
    probes_before, refused_before = _steady(lambda: (_pause(stack).probes, _refused(meta, "2")))
    backlog = [make_envelope("Purchase") for _ in range(1500)]
    stack.inject(backlog)
    wait_for(lambda: _pause(stack).probes >= probes_before + 2, 15, what="two failed probes")
    probes, refused = _steady(lambda: (_pause(stack).probes, _refused(meta, "2")))
    assert probes - probes_before == refused - refused_before, "only probes while paused"
    assert 0 == meta.pixel()["events"]

    # When Meta is back, the next probe resumes the pixel and the backlog leaves in full batches
    meta.faults(outage_s=0)
    everything = [*first, *backlog]
    ids = stack.wait_delivered(everything, timeout_s=20)

    assert {e.event.event_id: 1 for e in everything} == dict(ids)
    assert not _pause(stack).paused
    received = meta.received()
    # 1,502 events: a full probe and the rest, plus at most the two first ones on their own
    # (a retry of theirs due after the return runs as its own batch)
    assert received["batches"] <= 4 and 1000 == max(received["batch_sizes"]), received
    assert [] == DeadLetters(stack.client(), LEDGER_TTL_S).list(0, 10)
    wait_for(lambda: {"delivered": 1502} == stack.states(everything), 10, what="ledger")
    output = worker.output()
    assert "pixel_paused" in output and "pixel_resumed" in output
    # Attempts went only to the batches sent before the pause, never to the waiting ones.
    attempts = [sum(1 for x in stack.ledger().life(e.dedup_key) if x["state"] == "attempt")
                for e in backlog]
    assert {0} == set(attempts)


def test_a_revoked_token_pauses_its_pixel_only_and_delivery_resumes_once_restored(
    fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]
) -> None:
    meta = fake_meta()
    stack = relay_stack(meta, extra=SECOND_PIXEL)
    stack.tokens["PIXELRELAY_OTHER_TOKEN"] = OTHER_TOKEN
    stack.worker()
    meta.faults(revoked_tokens=[DEMO_TOKEN])

    mine = [make_envelope("Purchase") for _ in range(10)]
    theirs = [make_envelope("Purchase", pixel_id=OTHER_PIXEL) for _ in range(10)]
    stack.inject([*mine, *theirs])

    # Then: the other pixel's events go through; this one's wait, paused for its token
    stack.wait_delivered(theirs, timeout_s=10, pixel_id=OTHER_PIXEL)
    pause = wait_for(lambda: (p := _pause(stack)).paused and p, 10, what="the pause")
    assert ("token", 190) == (pause.reason, pause.code)
    wait_for(lambda: _pause(stack).probes >= 1, 15, what="a failed probe")
    wait_for(lambda: 10 == _pause(stack).waiting, 10, what="the events back in the inbox")
    assert [] == DeadLetters(stack.client(), LEDGER_TTL_S).list(0, 10)
    assert not _pause(stack, OTHER_PIXEL).paused

    # When the token works again, delivery resumes by itself
    meta.faults(revoked_tokens=[])
    ids = stack.wait_delivered(mine, timeout_s=30)

    assert {e.event.event_id: 1 for e in mine} == dict(ids)
    assert not _pause(stack).paused
    wait_for(lambda: {"delivered": 10} == stack.states(mine), 10, what="ledger")

"""The load test's verdict: acknowledged events against the ledger and the fake Graph API."""

from __future__ import annotations

from collections import Counter

from loadtest.reconcile import Acknowledged, Observed, judge

PIXEL = "1234567890"


def key(event_id: str, name: str = "Purchase") -> str:
    return f"{PIXEL}:{name}:{event_id}"


def observed(states: dict[str, str | None], at_meta: dict[str, int] | None = None,
             dead_reasons: dict[str, str | None] | None = None,
             meta_duplicates: int = 0) -> Observed:
    delivered = {k: 1 for k, s in states.items() if s == "delivered"}
    counts = Counter({f"{PIXEL}:{k.split(':', 2)[2]}": n
                      for k, n in (at_meta if at_meta is not None else delivered).items()})
    return Observed(accepted={k: 1 for k in states}, states=states,
                    dead_reasons=dead_reasons or {}, at_meta=counts,
                    meta_duplicates=meta_duplicates)


def test_every_event_delivered_once_or_dead_with_a_reason_passes() -> None:
    states = {key("a"): "delivered", key("b"): "delivered", key("c"): "dead"}
    seen = observed(states, dead_reasons={key("c"): "{'code': 100}"})

    result = judge(Acknowledged(3, frozenset({"a", "b", "c"})), seen)

    assert [] == result.problems
    assert (3, 3, 2, 1, 2) == (result.acknowledged, result.accepted, result.delivered,
                               result.dead, result.at_meta)


def test_an_acknowledged_event_the_ledger_never_accepted_fails() -> None:
    result = judge(Acknowledged(2, frozenset({"a", "lost"})), observed({key("a"): "delivered"}))

    assert not result.passed
    assert any("acknowledged 2 events but the ledger accepted 1" in p for p in result.problems)
    assert any("not in the ledger: lost" in p for p in result.problems)


def test_an_event_still_waiting_is_missing() -> None:
    result = judge(Acknowledged(2, frozenset()),
                   observed({key("a"): "delivered", key("b"): "queued"}))

    assert [f"1 accepted events are neither delivered nor dead ({{'queued': 1}}): {key('b')}"] \
        == result.problems


def test_an_event_delivered_twice_fails() -> None:
    result = judge(Acknowledged(1, frozenset()),
                   observed({key("a"): "delivered"}, at_meta={key("a"): 2}, meta_duplicates=1))

    assert [f"1 events reached Meta more than once: {PIXEL}:a"] == result.problems


def test_a_delivered_event_that_never_reached_meta_fails() -> None:
    result = judge(Acknowledged(1, frozenset()), observed({key("a"): "delivered"}, at_meta={}))

    assert any("never reached Meta" in p for p in result.problems)


def test_a_dead_event_without_a_reason_fails() -> None:
    result = judge(Acknowledged(1, frozenset()), observed({key("a"): "dead"}))

    assert [f"1 dead events have no reason recorded: {key('a')}"] == result.problems


def test_an_event_at_meta_that_the_ledger_calls_dead_fails() -> None:
    result = judge(Acknowledged(1, frozenset()),
                   observed({key("a"): "dead"}, at_meta={key("a"): 1},
                            dead_reasons={key("a"): "{'code': 100}"}))

    assert [f"1 events reached Meta that the ledger does not call delivered: {PIXEL}:a"] \
        == result.problems

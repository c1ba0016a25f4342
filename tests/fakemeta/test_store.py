"""The in-memory record: duplicates, caps and reset."""

from __future__ import annotations

from fakemeta._store import Store
from fakemeta._validation import EventBatch
from tests.fakemeta.conftest import make_event


def batch(*events: dict[str, object], **fields: str) -> EventBatch:
    return EventBatch(events=list(events), **fields)


def test_same_event_name_and_event_id_on_the_same_pixel_is_a_duplicate() -> None:
    store = Store()
    store.record_batch("1", batch(make_event(event_id="a")))

    duplicates = store.record_batch("1", batch(make_event(event_id="a")))

    assert 1 == duplicates
    assert {"events": 2, "event_ids": ["a", "a"], "duplicates": 1} == store.summary()["pixels"]["1"]


def test_duplicate_inside_one_batch_is_counted() -> None:
    store = Store()

    assert 1 == store.record_batch("1", batch(make_event(event_id="a"), make_event(event_id="a")))


def test_same_event_id_with_another_event_name_is_not_a_duplicate() -> None:
    store = Store()

    store.record_batch("1", batch(make_event(event_id="a", event_name="Purchase")))

    assert 0 == store.record_batch("1", batch(make_event(event_id="a", event_name="Lead")))


def test_same_event_id_on_another_pixel_is_not_a_duplicate() -> None:
    store = Store()

    store.record_batch("1", batch(make_event(event_id="a")))

    assert 0 == store.record_batch("2", batch(make_event(event_id="a")))


def test_numeric_and_string_event_ids_are_the_same_id() -> None:
    store = Store()

    store.record_batch("1", batch(make_event(event_id=7)))

    assert 1 == store.record_batch("1", batch(make_event(event_id="7")))


def test_events_without_event_id_are_never_duplicates() -> None:
    store = Store()
    event = make_event()
    del event["event_id"]

    assert 0 == store.record_batch("1", batch(event, event))
    assert [] == store.summary()["pixels"]["1"]["event_ids"]


def test_bodies_are_capped_but_counts_stay_exact() -> None:
    store = Store(max_events_kept=2)

    for n in range(5):
        store.record_batch("1", batch(make_event(event_id=str(n))))

    assert ["3", "4"] == [e["event_id"] for e in store.pixel_events("1")["events"]]
    assert (5, 5, ["3", "4"]) == (
        store.summary()["pixels"]["1"]["events"],
        store.summary()["batches"],
        store.summary()["pixels"]["1"]["event_ids"],
    )


def test_test_event_codes_and_partner_agents_are_kept_per_pixel() -> None:
    store = Store()

    store.record_batch("1", batch(make_event(), test_event_code="T1", partner_agent="pr-1"))
    store.record_batch("1", batch(make_event(), partner_agent="pr-1"))

    events = store.pixel_events("1")
    assert (["T1"], ["pr-1"]) == (events["test_event_codes"], events["partner_agents"])


def test_each_events_test_event_code_is_kept() -> None:
    store = Store()

    store.record_batch("1", batch(make_event(event_id="a"), make_event(event_id="b"),
                                  test_event_code="T1"))
    store.record_batch("1", batch(make_event(event_id="c")))
    store.record_batch("1", batch(make_event(event_id="d"), test_event_code="T2"))

    assert {"T1": ["a", "b"], "T2": ["d"]} == store.pixel_events("1")["test_events"]


def test_unknown_pixel_has_no_events() -> None:
    assert {
        "pixel_id": "9",
        "events": [],
        "test_event_codes": [],
        "test_events": {},
        "partner_agents": [],
    } == Store().pixel_events("9")


def test_reset_forgets_everything() -> None:
    store = Store()
    store.count_request()
    store.record_rejection(190)
    store.record_batch("1", batch(make_event()))

    store.reset()

    assert {"pixels": {}, "requests": 0, "in_flight": 0, "batches": 0, "batch_sizes": [],
            "rejected": {}} == (
        store.summary()
    )


def test_arrivals_keep_each_events_acceptance_time_per_event_name() -> None:
    now = [1_800_000_000.5]
    store = Store(max_events_kept=2, clock=lambda: now[0])
    store.record_batch("1", batch(make_event(event_id="p1")))
    now[0] += 1
    pageviews = [make_event(event_name="PageView", event_id=f"v{i}") for i in range(3)]
    store.record_batch("1", batch(*pageviews))

    assert {
        "pixel_id": "1",
        "event_name": "Purchase",
        "arrivals": [{"event_id": "p1", "received_ms": 1_800_000_000_500}],
    } == store.arrivals("1", "Purchase")
    assert ["v1", "v2"] == [a["event_id"] for a in store.arrivals("1", "PageView")["arrivals"]]
    assert [] == store.arrivals("9", "Purchase")["arrivals"]

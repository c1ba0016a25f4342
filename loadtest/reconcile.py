"""After a load test: was every event the collector acknowledged delivered exactly once, or is it
dead with a reason? None missing, none twice.

Three views are compared:

- what the load generator saw acknowledged (302s, 204s, the 202 answers' ``accepted``), with the
  event ids it chose itself (beacons, server events): ``Acknowledged``;
- what the ledger says (the collector's accepted sets, each event's state, the dead letters'
  reasons), read through ``relay.ledger.Ledger`` and ``relay.deadletters.DeadLetters``;
- what the fake Graph API received (``/_fake/received``: every event id per pixel).

``observe`` gathers the last two (``wait_settled`` first waits until nothing is on its way any
more); ``judge`` decides, and is a pure function so the rules are unit-tested on their own.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from relay.deadletters import DeadLetters
from relay.ledger import FINAL_STATES, Ledger

SAMPLE = 10  # how many keys a problem lists, at most


@dataclass(frozen=True)
class Acknowledged:
    """What the load generator was told: ``events`` acknowledged, ``event_ids`` it chose."""

    events: int
    event_ids: frozenset[str]


@dataclass(frozen=True)
class Observed:
    accepted: Mapping[str, int]  # dedup key -> acceptance ms, the collector's ledger entries
    states: Mapping[str, str | None]  # dedup key -> ledger state
    dead_reasons: Mapping[str, str | None]  # dead dedup key -> its reason (None: none recorded)
    at_meta: Counter[str]  # "pixel_id:event_id" -> copies the fake received during the run
    meta_duplicates: int  # the fake's own duplicate counter, during the run


@dataclass
class Reconciliation:
    acknowledged: int
    accepted: int
    delivered: int
    dead: int
    at_meta: int
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def _meta_key(dedup_key: str) -> str:
    pixel_id, _event_name, event_id = dedup_key.split(":", 2)
    return f"{pixel_id}:{event_id}"


def _some(items: list[str]) -> str:
    shown = ", ".join(sorted(items)[:SAMPLE])
    return shown + (f" and {len(items) - SAMPLE} more" if len(items) > SAMPLE else "")


def judge(ack: Acknowledged, seen: Observed) -> Reconciliation:
    """Every acknowledged event accepted by the ledger, delivered once or dead with a reason."""
    states = Counter(seen.states.get(key) for key in seen.accepted)
    delivered_keys = [k for k in seen.accepted if seen.states.get(k) in ("delivered", "duplicate")]
    result = Reconciliation(acknowledged=ack.events, accepted=len(seen.accepted),
                            delivered=len(delivered_keys), dead=states["dead"],
                            at_meta=sum(seen.at_meta.values()))
    problems = result.problems
    if len(seen.accepted) != ack.events:
        problems.append(f"the collector acknowledged {ack.events:,} events but the ledger "
                        f"accepted {len(seen.accepted):,}")
    accepted_ids = {key.split(":", 2)[2] for key in seen.accepted}
    unrecorded = sorted(ack.event_ids - accepted_ids)
    if unrecorded:
        problems.append(f"{len(unrecorded):,} acknowledged event ids are not in the ledger: "
                        f"{_some(unrecorded)}")
    unfinished = [k for k in seen.accepted if seen.states.get(k) not in FINAL_STATES]
    if unfinished:
        by_state = Counter(seen.states.get(k) or "no state" for k in unfinished)
        problems.append(f"{len(unfinished):,} accepted events are neither delivered nor dead "
                        f"({dict(by_state)}): {_some(unfinished)}")
    no_reason = [k for k in seen.accepted if seen.states.get(k) == "dead"
                 and not seen.dead_reasons.get(k)]
    if no_reason:
        problems.append(f"{len(no_reason):,} dead events have no reason recorded: "
                        f"{_some(no_reason)}")
    missing = [k for k in delivered_keys if seen.at_meta[_meta_key(k)] == 0]
    if missing:
        problems.append(f"{len(missing):,} events the ledger calls delivered never reached "
                        f"Meta: {_some(missing)}")
    twice = [k for k, n in seen.at_meta.items() if n > 1]
    if twice or seen.meta_duplicates:
        problems.append(f"{max(len(twice), seen.meta_duplicates):,} events reached Meta more "
                        f"than once: {_some(twice)}")
    delivered_at_meta = {_meta_key(k) for k in delivered_keys}
    unexpected = [k for k in seen.at_meta if k not in delivered_at_meta]
    if unexpected:
        problems.append(f"{len(unexpected):,} events reached Meta that the ledger does not call "
                        f"delivered: {_some(unexpected)}")
    return result


# -- reading the two other views --------------------------------------------------------------
@dataclass(frozen=True)
class MetaBaseline:
    """What the fake had received before the run, so a shared fake can be reconciled too."""

    ids: Counter[str]
    duplicates: int


def meta_snapshot(fake_meta_url: str, pixel_ids: list[str]) -> MetaBaseline:
    """Every "pixel_id:event_id" the fake holds (with copies), and its duplicate counter."""
    received = httpx.get(f"{fake_meta_url}/_fake/received", timeout=120).json()
    ids: Counter[str] = Counter()
    duplicates = 0
    for pixel_id in pixel_ids:
        pixel = received["pixels"].get(pixel_id)
        if not pixel:
            continue
        if len(pixel["event_ids"]) < pixel["events"]:
            raise RuntimeError(
                f"the fake Graph API kept {len(pixel['event_ids']):,} of the "
                f"{pixel['events']:,} events of pixel {pixel_id}: start it with "
                "FAKEMETA_MAX_EVENTS_KEPT above the run's events to reconcile")
        ids.update(f"{pixel_id}:{event_id}" for event_id in pixel["event_ids"])
        duplicates += pixel["duplicates"]
    return MetaBaseline(ids, duplicates)


def observe(client: Any, ttl_s: int, fake_meta_url: str, pixel_ids: list[str],
            start_ms: int, end_ms: int, baseline: MetaBaseline) -> Observed:
    ledger = Ledger(client, ttl_s)
    accepted = ledger.accepted_between(start_ms, end_ms)
    states: dict[str, str | None] = dict(ledger.accepted_states(start_ms, end_ms))
    letters = DeadLetters(client, ttl_s)
    dead_reasons: dict[str, str | None] = {}
    for key, state in states.items():
        if state == "dead":
            letter = letters.get(key)
            dead_reasons[key] = str(letter.reason) if letter and letter.reason else None
    now = meta_snapshot(fake_meta_url, pixel_ids)
    return Observed(accepted, states, dead_reasons, now.ids - baseline.ids,
                    now.duplicates - baseline.duplicates)


def arrival_times(fake_meta_url: str, pixel_id: str, event_names: Iterable[str],
                  since_ms: int) -> list[int]:
    """When the fake accepted each event of these names from ``since_ms`` on, sorted (ms)."""
    found: list[int] = []
    for name in event_names:
        body = httpx.get(f"{fake_meta_url}/_fake/arrivals", timeout=120,
                         params={"pixel_id": pixel_id, "event_name": name}).json()
        found += [a["received_ms"] for a in body["arrivals"] if a["received_ms"] >= since_ms]
    return sorted(found)


def wait_settled(client: Any, ttl_s: int, start_ms: int, end_ms: int, deadline: float,
                 on_poll: Callable[[int, int], None] | None = None) -> bool:
    """Poll the ledger until every event accepted in [start_ms, end_ms] is in a final state, or
    ``deadline`` (time.monotonic()) passes; ``on_poll(final, accepted)`` sees each poll."""
    ledger = Ledger(client, ttl_s)
    while True:
        states = ledger.accepted_states(start_ms, end_ms)
        pending = [k for k, s in states.items() if s not in FINAL_STATES]
        if on_poll is not None:
            on_poll(len(states) - len(pending), len(states))
        if not pending:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)

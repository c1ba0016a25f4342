"""Operator tools behind ``pixelrelay trace``, ``audit`` and ``requeue``."""

from __future__ import annotations

import getpass
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from redis import Redis

from relay import _dramatiq, keys
from relay.config import Settings
from relay.deadletters import DeadLetters
from relay.events import decode_envelope
from relay.ledger import FINAL_STATES, Actor, Ledger
from relay.queues import QUEUE_NAMES, queue_for

SECONDS_PER_DAY = 86_400
SECONDS_PER_HOUR = 3600


def _client(settings: Settings) -> Redis:
    return Redis.from_url(settings.redis_url, socket_timeout=10)


def _when(ms: int | float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def trace(settings: Settings, event_id: str, out: TextIO, client: Redis | None = None,
          search: bool = True) -> int:
    """Print the life of every (pixel, event name) copy of ``event_id``; 1 if none is known.

    The copies are read through ``Ledger.copies`` (computed fields, no search), as the
    dashboard's find does. With ``search`` (the CLI), an event found that way under no name
    is looked for by scanning its slot's buckets too (records older than the ledger's names)."""
    redis = client or _client(settings)
    ledger = Ledger(redis, settings.relay.ledger_ttl_days * SECONDS_PER_DAY)
    dedup_keys = ledger.copies(event_id)
    if not dedup_keys and search:
        dedup_keys = ledger.keys_for_event(event_id)
    if not dedup_keys:
        print(f"no event with event_id {event_id} is known (kept "
              f"{settings.relay.ledger_ttl_days} days)", file=out)
        return 1
    for key in dedup_keys:
        pixel_id, event_name, _ = key.split(":", 2)
        record = ledger.event(key)
        state = record.state if record.state not in (None, "accepted") else "waiting"
        print(f"{event_name} {event_id} for pixel {pixel_id}: {state}", file=out)
        if record.received_ms is not None:
            print(f"  {_when(record.received_ms)}  accepted by the collector", file=out)
        for entry in record.life:
            entry = dict(entry)
            at = entry.pop("at_ms")
            what = entry.pop("state")
            entry.pop("pixel_id", None)
            detail = ", ".join(f"{k}={v}" for k, v in entry.items() if v is not None)
            print(f"  {_when(at)}  {what}" + (f"  ({detail})" if detail else ""), file=out)
    return 0


@dataclass
class AuditReport:
    accepted: int = 0
    states: Counter[str] = field(default_factory=Counter)
    unaccounted: list[str] = field(default_factory=list)


def run_audit(settings: Settings, client: Redis, hours: int,
              settle_s: float = 0.0) -> AuditReport:
    """Every accepted event is delivered, dead, a duplicate, or still waiting somewhere."""
    report = AuditReport()
    waiting = _waiting_keys(client)
    now = time.time()
    since_ms = (int(now) // SECONDS_PER_HOUR - hours) * SECONDS_PER_HOUR * 1000
    ledger = Ledger(client, settings.relay.ledger_ttl_days * SECONDS_PER_DAY)
    for key, received_ms, name in ledger.accepted(since_ms):
        report.accepted += 1
        if name in FINAL_STATES:
            report.states[name] += 1
        elif key in waiting or name in ("requeued", "deferred", "queued", "attempt") \
                or now - received_ms / 1000 < settle_s:
            report.states["waiting"] += 1
        else:
            report.unaccounted.append(key)
    return report


def _waiting_keys(client: Redis) -> set[str]:
    """Dedup keys of events sitting in an inbox or inside a batch message not yet done.

    Batches in Dramatiq's own dead-letter queue (.XQ: failed by an unexpected error, not by a
    Meta answer) do not count as waiting: the audit lists their events.
    """
    found: set[str] = set()
    for queue in QUEUE_NAMES.values():
        for pixel in client.smembers(keys.inbox_pixels(queue)):
            for raw in client.lrange(keys.inbox(queue, pixel.decode()), 0, -1):
                found.add(decode_envelope(raw).dedup_key)
        for name in (queue, _dramatiq.delay_queue(queue)):
            for payload in client.hvals(_dramatiq.messages(name)):
                found.update(_keys_in_message(payload))
    return found


def _keys_in_message(payload: bytes) -> set[str]:
    import msgspec

    message = msgspec.json.decode(payload)
    args = message.get("args") or []
    items = args[1] if len(args) > 1 else []
    return {decode_envelope(item).dedup_key for item in items}


def audit(settings: Settings, out: TextIO, hours: int, client: Redis | None = None) -> int:
    redis = client or _client(settings)
    report = run_audit(settings, redis, hours)
    summary = ", ".join(f"{n} {state}" for state, n in sorted(report.states.items()))
    print(f"{report.accepted} events accepted in the last {hours} h: {summary or 'none'}",
          file=out)
    if report.unaccounted:
        print(f"{len(report.unaccounted)} events are neither delivered, waiting nor dead:",
              file=out)
        for key in report.unaccounted[:1000]:
            print(f"  {key}", file=out)
        return 1
    print("every accepted event is accounted for", file=out)
    return 0


def requeue(settings: Settings, out: TextIO, dedup_keys: list[str], everything: bool = False,
            client: Redis | None = None) -> int:
    redis = client or _client(settings)
    dead = DeadLetters(redis, settings.relay.ledger_ttl_days * SECONDS_PER_DAY,
                       settings.relay.dedup_window_hours * SECONDS_PER_HOUR)
    chosen = list(dedup_keys)
    if everything:
        chosen = [d.dedup_key for d in dead.list(0, 1_000_000)]
    if not chosen:
        print("nothing to requeue: name dead letter keys or pass --all", file=out)
        return 1
    moved = 0
    by = Actor.now(getpass.getuser(), "cli")
    for key in chosen:
        parts = key.split(":", 2)
        if len(parts) != 3:
            print(f"{key}: not a dead letter key (pixel:event_name:event_id)", file=out)
            continue
        if dead.requeue(key, queue_for(parts[1], settings.relay), by):
            moved += 1
        else:
            print(f"{key}: no such dead letter", file=out)
    print(f"requeued {moved} of {len(chosen)} dead letters", file=out)
    return 0 if moved == len(chosen) else 1

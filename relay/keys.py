"""Every Redis key pixelrelay uses, in one place. Dramatiq's own keys live under ``dramatiq:``.

Keys that belong to one pixel carry it as a hash tag (``{<pixel>}``), so that every key one Lua
script touches for a pixel lands in the same Redis Cluster slot; scripts receive all their keys
in ``KEYS[]``, built here (docs/deploy.md, "Redis Cluster").

The ledger keeps per-event records as fields of small hashes grouped by time and slot
(``ledger_bucket``, ``claim_bucket``): a hash of at most a few hundred short fields stays in
Redis's compact listpack encoding, where a field costs its bytes plus a few, against about 85 B
of overhead for a key of its own.
"""

from __future__ import annotations

import zlib

PREFIX = "pixelrelay"
DRAMATIQ_NAMESPACE = "dramatiq"
DAY_MS = 86_400_000
# Hashes per pixel and day for event records and dedup claims. 1,024 keeps up to about 130,000
# events per pixel and day (128 per hash, Redis's default hash-max-listpack-entries) in the
# compact encoding; beyond that a hash converts to a hashtable: correct, about 30 B more a field.
LEDGER_SLOTS = 1024


def inbox_pixels(queue: str) -> str:
    """Set of pixel ids that have events waiting in ``queue``'s inbox."""
    return f"{PREFIX}:inbox:{queue}"


def inbox(queue: str, pixel_id: str) -> str:
    """List of encoded envelopes waiting to be batched, oldest first."""
    return f"{PREFIX}:inbox:{queue}:{pixel_id}"


def batch_call(call_id: str) -> str:
    """Marks one BATCH call as done, so a call the client sends again does nothing."""
    return f"{PREFIX}:batchcall:{call_id}"


def click(click_id: str) -> str:
    """Old layout: one click's context (JSON); read for click ids made before the buckets."""
    return f"{PREFIX}:click:{click_id}"


# Hashes per day for click contexts: 512 keeps up to about 65,000 clicks a day (128 a hash) in
# the compact encoding, and a few hundred clicks a day still share hashes.
CLICK_SLOTS = 512


def click_slot_of(click_id: str) -> int:
    return zlib.crc32(click_id.encode()) % CLICK_SLOTS


def click_bucket(day: int, slot: int) -> str:
    """Hash of the click contexts made on one day (UTC) in one slot (field: the click id,
    ``relay.clicks``), and of notes of the later events enriched from them."""
    return f"{PREFIX}:clk:{day}:{slot}"


def split_dedup_key(dedup_key: str) -> tuple[str, str, str]:
    """``pixel:event_name:event_id`` -> its three parts (event names cannot hold ':')."""
    pixel_id, event_name, event_id = dedup_key.split(":", 2)
    return pixel_id, event_name, event_id


def dedup_key_name(dedup_key: str) -> str:
    """``pixel:event_name`` of a dedup key (a field of ``ledger_names``)."""
    return ":".join(split_dedup_key(dedup_key)[:2])


def ledger_field(dedup_key: str) -> str:
    """The field of an event in its pixel's hashes: ``event_name:event_id``."""
    return dedup_key.split(":", 1)[1]


def slot_of(event_id: str) -> int:
    """The hash slot of an event: from its event_id alone, so ``trace`` finds every pixel's and
    every event name's copy in one slot per day."""
    return zlib.crc32(event_id.encode()) % LEDGER_SLOTS


def day_of(ms: int) -> int:
    return ms // DAY_MS


def ledger_bucket(pixel_id: str, day: int, slot: int) -> str:
    """Hash of event records (field ``event_name:event_id``) received on one day (UTC), in one
    slot: state, receive time, source and references to steps of batch logs."""
    return f"{PREFIX}:ev:{{{pixel_id}}}:{day}:{slot}"


def ledger_bucket_of(dedup_key: str, received_ms: int) -> str:
    pixel_id, _, event_id = split_dedup_key(dedup_key)
    return ledger_bucket(pixel_id, day_of(received_ms), slot_of(event_id))


def ledger_bucket_pattern(slot: int | None = None) -> str:
    """SCAN pattern of every ledger bucket, or of one slot's."""
    return f"{PREFIX}:ev:*" if slot is None else f"{PREFIX}:ev:{{*}}:*:{slot}"


def ledger_names() -> str:
    """Hash: ``<pixel>:<event_name>`` -> the last time (ms) the collector stored such an event.
    With it, the copies of an event_id are read from a few computed fields, never searched
    for (``Ledger.copies``)."""
    return f"{PREFIX}:evnames"


def claim_bucket(pixel_id: str, day: int, slot: int) -> str:
    """Hash of dedup claims (field ``event_name:event_id``, value ``<claim ms>|<owner>``) made on
    one day, in one slot."""
    return f"{PREFIX}:claim:{{{pixel_id}}}:{day}:{slot}"


def batch_log(pixel_id: str, batch_id: str) -> str:
    """List of JSON steps of one batch (attempts, outcomes, fbtrace_id, timings); event records
    point to them by index."""
    return f"{PREFIX}:batch:{{{pixel_id}}}:{batch_id}"


# -- the layout before the ledger buckets (read for upgrades; nothing writes them any more) ----
def accepted(hour: int) -> str:
    """Old layout: sorted set of dedup keys accepted in one hour (score: received ms)."""
    return f"{PREFIX}:accepted:{hour}"


def dedup(dedup_key: str) -> str:
    """Old layout: claim of one (pixel, event_name, event_id), the batch id that sends it."""
    return f"{PREFIX}:dedup:{dedup_key}"


def life(dedup_key: str) -> str:
    """Old layout: list of JSON entries, one event's history."""
    return f"{PREFIX}:life:{dedup_key}"


def state(dedup_key: str) -> str:
    """Old layout: one event's state."""
    return f"{PREFIX}:state:{dedup_key}"


def event_index(event_id: str) -> str:
    """Old layout: set of dedup keys that share an event_id."""
    return f"{PREFIX}:eventid:{event_id}"


def dead_letters() -> str:
    """Sorted set of dead dedup keys by time; payload and reason in ``dead_letter``."""
    return f"{PREFIX}:dead"


def dead_letter(dedup_key: str) -> str:
    return f"{PREFIX}:dead:{dedup_key}"


def counters(minute: int) -> str:
    """Hash of per-minute counters, fields like ``delivered:<pixel>:<event_name>``."""
    return f"{PREFIX}:stats:{minute}"


def latency(minute: int) -> str:
    """Hash of per-minute latency histogram buckets, fields ``<pixel>:<bucket_ms>``."""
    return f"{PREFIX}:latency:{minute}"


def rate_limit(pixel_id: str, kind: str) -> str:
    return f"{PREFIX}:limit:{{{pixel_id}}}:{kind}"


def throttle(pixel_id: str) -> str:
    """Hash: current slow-down factor of a pixel after Meta's throttling errors."""
    return f"{PREFIX}:throttle:{{{pixel_id}}}"


def breaker(pixel_id: str) -> str:
    """Hash: a paused pixel's pause (state, reason, since_ms, probe schedule, last error);
    absent while the pixel flows (``relay.breaker``)."""
    return f"{PREFIX}:breaker:{pixel_id}"


def breaker_recent(pixel_id: str) -> str:
    """List: a flowing pixel's request outcomes since its first recent transient failure."""
    return f"{PREFIX}:breaker:{pixel_id}:recent"


def pixel_health(pixel_id: str) -> str:
    return f"{PREFIX}:health:{pixel_id}"


def collector_stats() -> str:
    return f"{PREFIX}:collector"


def dramatiq_queue(queue: str) -> str:
    """Dramatiq's list of ids ready to run; its other keys are in ``relay._dramatiq``."""
    return f"{DRAMATIQ_NAMESPACE}:{queue}"


# -- the dashboard's own keys (dashboard/) ------------------------------------------------------
def counters_hour(hour: int) -> str:
    """Hash: one hour of ``counters`` added up (the 24 h and 7 d views read these)."""
    return f"{PREFIX}:stats:h:{hour}"


def latency_hour(hour: int) -> str:
    """Hash: one hour of ``latency`` added up."""
    return f"{PREFIX}:latency:h:{hour}"


def workers() -> str:
    """Hash: relay worker id -> JSON presence (queues, threads, host, pid, seen_ms)."""
    return f"{PREFIX}:workers"


def pixel_activity(pixel_id: str) -> str:
    """Hash: a pixel's last delivery and last error with Meta's code and fbtrace_id."""
    return f"{PREFIX}:activity:{pixel_id}"


def dead_index(facet: str, value: str) -> str:
    """Sorted set of dead dedup keys by time, for one facet value (pixel, event, kind, code)."""
    return f"{PREFIX}:dead:ix:{facet}:{value}"


def dead_reasons() -> str:
    """Hash: dead letters per ``kind:code`` now (the counts atop the dead-letter page)."""
    return f"{PREFIX}:dead:reasons"


def dashboard_sessions() -> str:
    """Namespace of the dashboard's server-side sessions (one key per session id)."""
    return f"{PREFIX}:session"


def dashboard_secret() -> str:
    """Random secret signing the dashboard's CSRF tokens, made by the first dashboard start."""
    return f"{PREFIX}:dashboard:secret"


def login_failures(kind: str, value: str) -> str:
    """Hash of failed logins (count, last_ms) for one name or one address."""
    return f"{PREFIX}:loginfail:{kind}:{value}"


def operator_audit() -> str:
    """List of JSON entries, newest first: every operator action in the dashboard."""
    return f"{PREFIX}:audit"


def bulk_job(job_id: str) -> str:
    """Hash: progress of one bulk requeue or discard started in the dashboard."""
    return f"{PREFIX}:job:{job_id}"


def bulk_jobs() -> str:
    """Sorted set of bulk job ids by start time."""
    return f"{PREFIX}:jobs"


def click_events(click_id: str) -> str:
    """Old layout: set of dedup keys of the events that carried a click_id (read for click ids
    made before the click buckets; ``relay.clicks``)."""
    return f"{PREFIX}:clickev:{click_id}"


def observer_leader() -> str:
    """The worker elected to export Redis-derived gauges and send built-in alerts."""
    return f"{PREFIX}:observer:leader"


def alert_state() -> str:
    """Hash of built-in alert condition -> JSON (active, since, last notified)."""
    return f"{PREFIX}:alerts:state"



def alert_seen() -> str:
    """Hash of built-in alert condition -> ms it was first seen holding (for ``throttled_for_s``
    and the like), so a newly elected observer does not start counting again."""
    return f"{PREFIX}:alerts:seen"


def alert_outbox(endpoint: str) -> str:
    """List of JSON alert messages waiting for one endpoint (``relay.notify.endpoint_key``),
    oldest first; a message leaves it only once the endpoint took it."""
    return f"{PREFIX}:alerts:outbox:{endpoint}"


def alert_outbox_state(endpoint: str) -> str:
    """Hash: an endpoint's failures in a row, next try (ms) and messages dropped while full."""
    return f"{PREFIX}:alerts:outbox:{endpoint}:state"


def alert_sender(endpoint: str) -> str:
    """Lease of the worker sending an endpoint's first message now (one sender at a time)."""
    return f"{PREFIX}:alerts:outbox:{endpoint}:sender"

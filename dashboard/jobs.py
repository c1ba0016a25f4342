"""Bulk requeue and discard over a filter, in the background, with progress in Redis.

A job walks the letters matching a filter a chunk at a time (``DeadLetters.matching_keys``)
and moves each with the same atomic script as ``pixelrelay requeue`` (one event at a time, so
a letter requeued or discarded meanwhile by someone else is simply skipped). The page polls the
job's progress; the request that started it returns at once.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Literal

from redis import Redis

from dashboard import auditlog
from relay import keys
from relay.config import Settings
from relay.deadletters import DeadFilter, DeadLetters
from relay.ledger import Actor
from relay.queues import queue_for

Action = Literal["requeue", "discard"]
JOB_TTL_S = 7 * 86_400
STALE_MS = 15_000  # a running job not updated this long was interrupted (dashboard restart)


@dataclass(frozen=True, slots=True)
class JobProgress:
    job_id: str
    action: str
    who: str
    state: str  # running, done, interrupted
    total: int
    done: int
    skipped: int
    started_ms: int
    updated_ms: int
    filter_text: str

    @property
    def share(self) -> float:
        return min(1.0, (self.done + self.skipped) / self.total) if self.total else 1.0


def move(dead: DeadLetters, settings: Settings, action: Action, dedup_key: str,
         by: Actor) -> bool:
    """Requeue (as ``pixelrelay requeue`` does) or discard one letter, ``by`` an operator (a
    step of the event's life); False if it is gone."""
    if action == "requeue":
        parts = dedup_key.split(":", 2)
        if len(parts) != 3:
            return False
        return dead.requeue(dedup_key, queue_for(parts[1], settings.relay), by)
    return dead.discard(dedup_key, by)


class JobRunner:
    def __init__(self, client: Redis, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._dead = DeadLetters(client, settings.relay.ledger_ttl_days * 86_400)
        self._stop = threading.Event()

    def start(self, action: Action, where: DeadFilter, who: str, role: str, address: str,
              filter_text: str) -> str:
        job_id = secrets.token_hex(8)
        total, _ = self._dead.matching_count(where)
        now = int(time.time() * 1000)
        key = keys.bulk_job(job_id)
        self._client.hset(key, mapping={"action": action, "who": who, "state": "running",
                                        "total": total, "done": 0, "skipped": 0,
                                        "started_ms": now, "updated_ms": now,
                                        "filter": filter_text})
        self._client.expire(key, JOB_TTL_S)
        self._client.zadd(keys.bulk_jobs(), {job_id: now})
        thread = threading.Thread(target=self._run, name=f"job-{job_id}", daemon=True,
                                  args=(job_id, action, where, who, role, address, filter_text))
        thread.start()
        return job_id

    def _run(self, job_id: str, action: Action, where: DeadFilter, who: str, role: str,
             address: str, filter_text: str) -> None:
        key = keys.bulk_job(job_id)
        done = skipped = 0
        by = Actor.now(who, "dashboard", job_id)
        try:
            for chunk in self._dead.matching_keys(where):
                if self._stop.is_set():
                    break
                for dedup_key in chunk:
                    if move(self._dead, self._settings, action, dedup_key, by):
                        done += 1
                    else:
                        skipped += 1
                self._client.hset(key, mapping={"done": done, "skipped": skipped,
                                                "updated_ms": int(time.time() * 1000)})
            state = "interrupted" if self._stop.is_set() else "done"
        except Exception:  # noqa: BLE001 - the job's page says it stopped
            state = "interrupted"
        final = {"done": done, "skipped": skipped, "state": state,
                 "updated_ms": int(time.time() * 1000)}
        if state == "done":
            final["total"] = done + skipped  # the exact count, now that it is known
        self._client.hset(key, mapping=final)
        auditlog.record(self._client, who, role, f"bulk_{action}", done, address=address,
                        job=job_id, filter=filter_text, skipped=skipped, state=state)

    def progress(self, job_id: str) -> JobProgress | None:
        raw = self._client.hgetall(keys.bulk_job(job_id))
        if not raw:
            return None
        v = {k.decode(): x.decode() for k, x in raw.items()}
        state = v["state"]
        if state == "running" and time.time() * 1000 - int(v["updated_ms"]) > STALE_MS:
            state = "interrupted"
        return JobProgress(job_id, v["action"], v["who"], state, int(v["total"]),
                           int(v["done"]), int(v["skipped"]), int(v["started_ms"]),
                           int(v["updated_ms"]), v.get("filter", ""))

    def recent(self, limit: int = 10) -> list[JobProgress]:
        ids = self._client.zrevrange(keys.bulk_jobs(), 0, limit - 1)
        found = [self.progress(i.decode()) for i in ids]
        return [j for j in found if j is not None]

    def shutdown(self) -> None:
        self._stop.set()

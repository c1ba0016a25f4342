"""The operators' audit log: who did what, when, to how many dead letters (shown in the
dashboard). A capped Redis list, newest first; entries name filters and keys, never event data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgspec
from redis import Redis

from relay import keys

KEEP_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at_ms: int
    who: str
    role: str
    action: str  # login, login_failed, logout, requeue, discard, bulk_requeue, bulk_discard
    count: int
    detail: dict[str, Any]
    address: str


def record(client: Redis, who: str, role: str, action: str, count: int = 0,
           address: str = "", **detail: Any) -> None:
    entry = {"at_ms": int(time.time() * 1000), "who": who, "role": role, "action": action,
             "count": count, "detail": detail, "address": address}
    pipe = client.pipeline(transaction=False)
    pipe.lpush(keys.operator_audit(), msgspec.json.encode(entry))
    pipe.ltrim(keys.operator_audit(), 0, KEEP_ENTRIES - 1)
    pipe.execute()


def recent(client: Redis, offset: int = 0, limit: int = 100) -> list[AuditEntry]:
    raw = client.lrange(keys.operator_audit(), offset, offset + limit - 1)
    result = []
    for line in raw:
        e = msgspec.json.decode(line)
        result.append(AuditEntry(int(e["at_ms"]), e["who"], e.get("role", ""), e["action"],
                                 int(e.get("count", 0)), e.get("detail") or {},
                                 e.get("address", "")))
    return result


def total(client: Redis) -> int:
    return int(client.llen(keys.operator_audit()))

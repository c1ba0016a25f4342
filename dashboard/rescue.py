"""Dead letters: filter, page, look inside, requeue or discard (one, the selected, or every one
matching the filter, the last in the background with progress)."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import msgspec
from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException
from litestar.params import Body, PathParameter, QueryParameter
from litestar.response import Redirect, Template

from dashboard import auditlog
from dashboard.app_support import ctx_of, operator_of, peer_address, require_operator_role
from dashboard.jobs import move
from relay.deadletters import DeadFilter, Page
from relay.events import MetaEvent
from relay.ledger import Actor

PAGE_SIZE = 50
MAX_SELECTED = 500
AGES = {"": "any age", "1h": "dead in the last hour", "24h": "dead in the last 24 h",
        "older-1h": "dead over an hour ago", "older-24h": "dead over 24 h ago"}
HOUR_MS = 3_600_000


class FilterForm(msgspec.Struct):
    pixel: str = ""
    event: str = ""
    kind: str = ""
    code: str = ""
    age: str = ""


class ActionForm(FilterForm):
    action: str = ""
    keys: list[str] | str = msgspec.field(default_factory=list)  # one ticked box: a str
    key: str = ""
    scope: str = "selected"  # selected | one (the matching ones: action "requeue-matching")


def _filter(form: FilterForm, now_ms: int | None = None) -> DeadFilter:
    if form.age not in AGES:
        raise HTTPException(status_code=400, detail=f"age must be one of "
                            f"{', '.join(a or 'empty' for a in AGES)}")
    for name in ("pixel", "event", "kind", "code"):
        if len(getattr(form, name)) > 200:
            raise HTTPException(status_code=400, detail=f"{name} is longer than 200 characters")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    newer = older = None
    if form.age == "1h":
        newer = now - HOUR_MS
    elif form.age == "24h":
        newer = now - 24 * HOUR_MS
    elif form.age == "older-1h":
        older = now - HOUR_MS
    elif form.age == "older-24h":
        older = now - 24 * HOUR_MS
    return DeadFilter(pixel=form.pixel.strip(), event=form.event.strip(),
                      kind=form.kind.strip(), code=form.code.strip(),
                      newer_than_ms=newer, older_than_ms=older)


def _query(form: FilterForm) -> str:
    pairs = {k: getattr(form, k) for k in ("pixel", "event", "kind", "code", "age")
             if getattr(form, k)}
    return urlencode(pairs)


def _describe(form: FilterForm) -> str:
    parts = [f"{k}={getattr(form, k)}" for k in ("pixel", "event", "kind", "code")
             if getattr(form, k)]
    if form.age:
        parts.append(AGES[form.age])
    return ", ".join(parts) or "every dead letter"


HIDDEN_FIELDS = ("client_ip_address", "client_user_agent")


def event_for_display(event: MetaEvent) -> str:
    """The event as it would be sent: personal data hashed as stored; the IP address and user
    agent (sent to Meta unhashed) are replaced by a note that they are present."""
    data = msgspec.to_builtins(event)
    user = data.get("user_data") or {}
    for name in HIDDEN_FIELDS:
        if user.get(name):
            user[name] = "(present, not shown)"
    return msgspec.json.format(msgspec.json.encode(data), indent=2).decode()


@get("/dead-letters", sync_to_thread=True)
def dead_letters(request: Request[Any, Any, Any],
                 pixel: Annotated[str, QueryParameter(max_length=200)] = "",
                 event: Annotated[str, QueryParameter(max_length=200)] = "",
                 kind: Annotated[str, QueryParameter(max_length=200)] = "",
                 code: Annotated[str, QueryParameter(max_length=200)] = "",
                 age: Annotated[str, QueryParameter(max_length=20)] = "",
                 cursor: Annotated[str | None, QueryParameter(max_length=600)] = None,
                 done: Annotated[str | None, QueryParameter(max_length=200)] = None,
                 ) -> Template:
    ctx = ctx_of(request)
    form = FilterForm(pixel, event, kind, code, age)
    where = _filter(form)
    matching, exact = ctx.dead.matching_count(where)
    page = ctx.dead.page(where, cursor, PAGE_SIZE) if matching else Page([], None, 0)
    reasons = sorted(ctx.dead.reasons().items(), key=lambda kv: -kv[1])
    operator = operator_of(request)
    return Template("dead_letters.html", context={
        "form": form, "ages": AGES, "page_rows": page.letters, "next_cursor": page.next_cursor,
        "examined": page.examined, "cursor": cursor, "matching": matching, "exact": exact,
        "reasons": reasons, "total": ctx.dead.count(), "query": _query(form),
        "described": _describe(form), "pixels": [p.id for p in ctx.settings.pixels],
        "can_act": operator.role == "operator", "done": done, "operator": operator,
        "page": "dead", "jobs": [j for j in ctx.jobs.recent(3) if j.state == "running"],
    })


@get("/dead-letter", sync_to_thread=True)
def dead_letter(request: Request[Any, Any, Any],
                key: Annotated[str, QueryParameter(name="key", max_length=600)]) -> Template:
    ctx = ctx_of(request)
    letter = ctx.dead.get(key)
    life = ctx.ledger.life(key)
    if letter is None and not life:
        raise HTTPException(status_code=404, detail="No dead letter or event has that key "
                            "(it may have been requeued, discarded or expired).")
    attempts = [e for e in life if e.get("state") in ("attempt", "dead", "deferred",
                                                      "delivered", "duplicate", "requeued")]
    operator = operator_of(request)
    return Template("dead_letter.html", context={
        "key": key, "letter": letter, "life": life, "attempts": attempts,
        "state": ctx.ledger.state(key),
        "event_json": event_for_display(letter.envelope.event) if letter else None,
        "can_act": operator.role == "operator", "operator": operator, "page": "dead"})


@post("/dead-letters/act", sync_to_thread=True, status_code=303)
def act(request: Request[Any, Any, Any],
        data: Annotated[ActionForm, Body(media_type=RequestEncodingType.URL_ENCODED)]
        ) -> Redirect:
    """Requeue or discard one letter, the selected ones, or start a job for every match."""
    operator = require_operator_role(request)
    verb, _, every = data.action.partition("-")
    if verb not in ("requeue", "discard") or every not in ("", "matching"):
        raise HTTPException(status_code=400, detail="action must be requeue or discard")
    ctx = ctx_of(request)
    address = peer_address(request)
    action: Literal["requeue", "discard"] = "requeue" if verb == "requeue" else "discard"
    if every == "matching":
        where = _filter(data)
        job_id = ctx.jobs.start(action, where, operator.name, operator.role, address,
                                _describe(data))
        return Redirect(f"/jobs/{job_id}", status_code=303)
    ticked = [data.keys] if isinstance(data.keys, str) else data.keys
    chosen = [data.key] if data.scope == "one" else ticked
    chosen = [k for k in chosen if k]
    if not chosen:
        raise HTTPException(status_code=400, detail="Select at least one dead letter.")
    if len(chosen) > MAX_SELECTED:
        raise HTTPException(status_code=400, detail=f"At most {MAX_SELECTED} letters at once: "
                            "use 'every one matching' for more.")
    by = Actor.now(operator.name, "dashboard")
    moved = sum(1 for k in chosen if move(ctx.dead, ctx.settings, action, k, by))
    auditlog.record(ctx.client, operator.name, operator.role, action, moved, address=address,
                    keys=chosen[:20], selected=len(chosen))
    verb = "requeued" if action == "requeue" else "discarded"
    note = f"{moved} of {len(chosen)} {verb}"
    if data.scope == "one":
        return Redirect(f"/dead-letters?{urlencode({'done': note})}", status_code=303)
    back = _query(data)
    return Redirect(f"/dead-letters?{back}{'&' if back else ''}{urlencode({'done': note})}",
                    status_code=303)


@get("/jobs/{job_id:str}", sync_to_thread=True)
def job_page(request: Request[Any, Any, Any],
             job_id: Annotated[str, PathParameter(max_length=40)]) -> Template:
    ctx = ctx_of(request)
    job = ctx.jobs.progress(job_id)
    if job is None:
        raise HTTPException(status_code=404, detail="No such bulk action.")
    return Template("job.html", context={"job": job, "operator": operator_of(request),
                                         "page": "dead"})


@get("/fragments/jobs/{job_id:str}", sync_to_thread=True)
def job_fragment(request: Request[Any, Any, Any],
                 job_id: Annotated[str, PathParameter(max_length=40)]) -> Template:
    ctx = ctx_of(request)
    job = ctx.jobs.progress(job_id)
    if job is None:
        raise HTTPException(status_code=404, detail="No such bulk action.")
    return Template("_job.html", context={"job": job})


handlers = [dead_letters, dead_letter, act, job_page, job_fragment]

"""Click contexts: what a redirect learned about the visitor, kept for enrichment and find.

A click context (``ClickContext``: the slug, the time, fbc, fbp, IP, user agent, UTMs, and the
landing URL and referrer of the click's own events) is kept ``collector.click_ttl_days`` so
that later events carrying the ``click_id`` (a Lead from a Telegram bot, a Purchase from the
shop) are enriched from it, and the dashboard can show a click and what followed.

Layout (``relay.keys``):

- A click id carries the day it was made (``new_click_id``: three base64url characters of the
  UTC day, then 80 random bits), so its context is a field of a hash grouped by day and slot
  (``keys.click_bucket``) instead of a key of its own: no key overhead and no expiry entry per
  click. The hash expires ``click_ttl`` after its day ends.
- The value is ``encode_click``'s: a version byte, then raw deflate of the msgpack array with a
  preset dictionary of the user agents and URL pieces ad traffic carries (``ZDICT_V1``): a
  Facebook in-app click with its landing URL, about 720 bytes as JSON, becomes about 280
  (``make bench-footprint``: 311 B a click in Redis with its field). A new dictionary gets a new
  version byte; values already stored keep theirs.
- A redirect's own events have the click id as their event_id, so ``trace <click_id>`` finds
  them in the ledger without an index. A later event enriched from the click is noted as a
  field ``<click_id>|<dedup key>`` of the click's hash (``later_events`` reads them with an
  HSCAN of that one hash: a few hundred fields at most).
- Click ids made before this layout (16 characters, no day) were kept as ``click:<id>`` keys
  with a JSON value, and their later events in ``clickev:<id>`` sets; they are still read until
  they expire.

The hash stays in Redis's compact listpack encoding only while its values fit
``hash-max-listpack-value``; the servers pixelrelay starts raise it to 512
(``relay.redis_server``), and docs/deploy.md asks the same of an operator's own Redis.
"""

from __future__ import annotations

import secrets
import zlib
from collections.abc import Iterable
from typing import Any

import msgspec
from redis import Redis
from redis.client import Pipeline

from relay import keys
from relay.events import ClickContext

DAY_S = 86_400

_DAY_CHARS = 3  # base64url: 262,144 days, until the year 2687
_RANDOM_BYTES = 10  # 80 bits: 14 characters
CLICK_ID_LENGTH = _DAY_CHARS + 14
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_DIGIT = {c: i for i, c in enumerate(_ALPHABET)}
_LATER = "|"  # separates a click id from a later event's dedup key in a field name

# Pieces of the user agents and URLs of ad clicks (Facebook's and Instagram's in-app browsers
# on Android and iOS, mobile Chrome and Safari, desktop browsers), and the UTM and click-id
# parameter names: what deflate can refer back to instead of spelling out. Written by hand from
# the published formats, not from any one benchmark's values. Part of the stored format of
# version 1: never change it; add a ZDICT_V2 and a version byte instead.
ZDICT_V1 = (
    b"utm_sourceutm_mediumutm_campaignutm_contentutm_termutm_idfbclid=gclid=ttclid="
    b"https://m.facebook.com/https://l.facebook.com/https://lm.facebook.com/"
    b"https://www.facebook.com/https://www.instagram.com/https://l.instagram.com/"
    b"https://t.me/?start=paid_socialfacebookinstagramcpccampaign"
    b"fb.1.fb.2.IwAR IwZX IwY2 "
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0 "
    b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    b"Version/17.5 Safari/605.1.15 Gecko/20100101 Firefox/128.0 "
    b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5_1 like Mac OS X) AppleWebKit/605.1.15 "
    b"(KHTML, like Gecko) Mobile/15E148 Safari/604.1 CriOS/126.0.6478.153 "
    b"[FBAN/FBIOS;FBAV/470.0.0.41.98;FBBV/630193316;FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;"
    b"FBSV/17.5.1;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/0] "
    b"Instagram 338.0.0.31.89 (iPhone14,5; iOS 17_5_1; en_US; en; scale=3.00; 1170x2532; "
    b"619316245) "
    b"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/126.0.0.0 Mobile Safari/537.36 SamsungBrowser/25.0 "
    b"Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A.240705.005; wv) AppleWebKit/537.36 "
    b"(KHTML, like Gecko) Version/4.0 Chrome/126.0.6478.134 Mobile Safari/537.36 "
    b"[FB_IAB/FB4A;FBAV/473.0.0.48.109;] [FB_IAB/Orca-Android;FBAV/460.0.0.48.109;] "
    b"Instagram 339.0.0.38.119 Android (34/14; 420dpi; 1080x2400; samsung; SM-A546B; a54x; "
    b"s5e8835; en_US; 619316245) "
)
_VERSION_V1 = b"\x01"
_DICTIONARIES = {_VERSION_V1[0]: ZDICT_V1}

_packer = msgspec.msgpack.Encoder()
_json_click = msgspec.json.Decoder(ClickContext)


def new_click_id(now_ms: int) -> str:
    """A click id for a click made at ``now_ms``: its UTC day, then 80 random bits (17
    URL-safe characters, which Telegram's start parameter accepts: ``[A-Za-z0-9_-]{1,64}``)."""
    day = now_ms // keys.DAY_MS
    prefix = "".join(_ALPHABET[(day >> shift) & 63] for shift in (12, 6, 0))
    return prefix + secrets.token_urlsafe(_RANDOM_BYTES)


def day_of_click(click_id: str) -> int | None:
    """The day a click id was made, or None for an id of the layout before (or not ours)."""
    if len(click_id) != CLICK_ID_LENGTH:
        return None
    day = 0
    for char in click_id[:_DAY_CHARS]:
        digit = _DIGIT.get(char)
        if digit is None:
            return None
        day = day * 64 + digit
    return day


def bucket_of(click_id: str) -> str | None:
    """The hash holding the click's context, or None for an id of the layout before."""
    day = day_of_click(click_id)
    if day is None:
        return None
    return keys.click_bucket(day, keys.click_slot_of(click_id))


def expires_at_s(click_id: str, ttl_s: int) -> int:
    """When the click's hash expires (Unix seconds): ``ttl_s`` after the end of its day, so a
    click made at 23:59 keeps its context as long as one made at 00:00."""
    day = day_of_click(click_id)
    assert day is not None, "only click ids with a day have a bucket"
    return (day + 1) * DAY_S + ttl_s


_PAGE_URL_AT = ClickContext.__struct_fields__.index("page_url") - 1  # the id is not stored


def encode_click(click: ClickContext) -> bytes:
    """The stored form of a click context (its id is the field name, not part of the value;
    the landing URL, which holds the id, is stored as the parts around it)."""
    fields: list[Any] = list(msgspec.structs.astuple(click)[1:])
    if click.page_url is not None:
        fields[_PAGE_URL_AT] = click.page_url.split(click.click_id)
    packed = _packer.encode(fields)
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, ZDICT_V1)
    return _VERSION_V1 + deflate.compress(packed) + deflate.flush()


def decode_click(click_id: str, raw: bytes | str) -> ClickContext:
    """A stored click context: ``encode_click``'s form, or the JSON array of the layout before.

    Raises ``msgspec.ValidationError`` for a value of neither shape."""
    data = raw.encode() if isinstance(raw, str) else raw
    if data[:1] == b"[":
        return _json_click.decode(data)
    zdict = _DICTIONARIES.get(data[0]) if data else None
    if zdict is None:
        raise msgspec.ValidationError("click context of an unknown version")
    try:
        inflate = zlib.decompressobj(-15, zdict)
        fields = msgspec.msgpack.decode(inflate.decompress(data[1:]) + inflate.flush())
        if len(fields) > _PAGE_URL_AT and fields[_PAGE_URL_AT] is not None:
            fields[_PAGE_URL_AT] = click_id.join(fields[_PAGE_URL_AT])
        return ClickContext(click_id, *fields)
    except (zlib.error, TypeError, ValueError) as exc:
        raise msgspec.ValidationError(f"malformed click context: {exc}") from None


class Clicks:
    """Reading click contexts, and noting later events, through one synchronous client."""

    def __init__(self, client: Redis) -> None:
        self.client = client

    def get_many(self, click_ids: Iterable[str]) -> dict[str, ClickContext]:
        """The contexts still kept of ``click_ids`` (unknown or expired ones left out), in one
        round trip. A value that cannot be read is left out too (logged by the caller's
        absence of enrichment: the event is sent without it)."""
        ids = sorted(set(click_ids))
        if not ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for click_id in ids:
            bucket = bucket_of(click_id)
            if bucket is None:
                pipe.get(keys.click(click_id))
            else:
                pipe.hget(bucket, click_id)
        found: dict[str, ClickContext] = {}
        for click_id, raw in zip(ids, pipe.execute(), strict=True):
            if raw is None:
                continue
            try:
                found[click_id] = decode_click(click_id, raw)
            except msgspec.ValidationError:
                continue
        return found

    def get(self, click_id: str) -> ClickContext | None:
        return self.get_many([click_id]).get(click_id)

    @staticmethod
    def note_later(pipe: Pipeline[Any], click_id: str, dedup_key: str, ttl_s: int) -> None:
        """Queue on ``pipe`` the note that the event ``dedup_key`` was enriched from the click
        (a field of the click's hash, which already expires with the click; a click id of the
        layout before gets its old set)."""
        bucket = bucket_of(click_id)
        if bucket is None:
            pipe.sadd(keys.click_events(click_id), dedup_key)
            pipe.expire(keys.click_events(click_id), ttl_s)
        else:
            pipe.hset(bucket, f"{click_id}{_LATER}{dedup_key}", b"")
            pipe.expireat(bucket, expires_at_s(click_id, ttl_s), gt=True)

    def later_events(self, click_id: str) -> list[str]:
        """Dedup keys of the later events enriched from the click, sorted."""
        bucket = bucket_of(click_id)
        if bucket is None:
            members = self.client.smembers(keys.click_events(click_id))
            return sorted(m.decode() for m in members)
        prefix = f"{click_id}{_LATER}"
        found = []
        for name, _ in self.client.hscan_iter(bucket, match=_glob_literal(prefix) + "*",
                                              count=500):
            found.append(name.decode().removeprefix(prefix))
        return sorted(found)


def _glob_literal(text: str) -> str:
    """``text`` with the glob characters Redis' MATCH knows escaped."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)

"""What the collector learns about a visitor: real client IP, bot or human, fbc and fbp cookies."""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from relay.validation import is_valid_fbc, is_valid_fbp

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Crawlers, link previews and monitors: they follow links but are not people. Kept short and
# specific; operators add more with collector.extra_bot_user_agents.
DEFAULT_BOT_USER_AGENTS = (
    # Generic: "Googlebot/2.1", "compatible; AhrefsBot;", "(+http://...bot)". A bare "bot" would
    # also match phones such as CUBOT, so it must be followed by one of these characters.
    "bot/", "bot;", "bot)", "bot-", "bot+", "bot.html",
    "googlebot", "bingbot", "facebot", "twitterbot", "slackbot", "linkedinbot", "telegrambot",
    "discordbot", "applebot", "redditbot", "yandexbot", "duckduckbot", "crawler", "spider",
    "slurp", "facebookexternalhit", "facebookcatalog",
    "meta-externalagent", "whatsapp/", "skypeuripreview", "pinterestbot", "embedly",
    "quora link preview", "outbrain", "vkshare", "w3c_validator", "bingpreview",
    "google-pagerenderer", "headlesschrome", "lighthouse", "pingdom", "uptimerobot",
    "statuscake", "python-requests", "python-urllib", "go-http-client", "okhttp", "wget/",
    "scrapy", "feedfetcher", "mediapartners-google", "adsbot-google", "yahoo! slurp",
)

MAX_FBCLID_LENGTH = 1000  # real ones are a few hundred characters; a cookie must stay small
FBC_COOKIE = "_fbc"
FBP_COOKIE = "_fbp"
CLICK_COOKIE = "_prclk"
# RFC 6265 cookie-octets: an fbclid with anything else cannot be set as a cookie as it is, and the
# fbc made from it would be refused by Meta (subcode 2804001) and by is_valid_fbc.
_FBCLID_FORM = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]+")


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    networks: tuple[IPNetwork, ...]
    # A redirect asks about its peer twice (client IP, https); the peers are a few proxies.
    _cached: Callable[[str], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_cached", lru_cache(maxsize=4096)(self._check))

    @classmethod
    def parse(cls, specs: Iterable[str]) -> TrustedProxies:
        return cls(tuple(ipaddress.ip_network(s, strict=False) for s in specs))

    def trusts(self, address: str | None) -> bool:
        if not address or not self.networks:
            return False
        return self._cached(address)

    def _check(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)


def _valid_ip(value: str) -> str | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1 : value.index("]")]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def client_ip(peer: str | None, headers: Mapping[str, str], proxies: TrustedProxies) -> str | None:
    """The visitor's address: forwarded headers count only when the peer is a trusted proxy.

    X-Forwarded-For is read from the right; the first address that is not a trusted proxy is
    the client (anything left of it may be spoofed by the client itself).
    """
    if not proxies.trusts(peer):
        return peer
    forwarded = headers.get("x-forwarded-for")
    if forwarded:
        hops = [h for h in (_valid_ip(p) for p in forwarded.split(",")) if h]
        for hop in reversed(hops):
            if not proxies.trusts(hop):
                return hop
        if hops:
            return hops[0]
    real = headers.get("x-real-ip")
    if real and (ip := _valid_ip(real)):
        return ip
    return peer


class BotDetector:
    def __init__(self, extra: Iterable[str] = ()) -> None:
        needles = [*DEFAULT_BOT_USER_AGENTS, *(e.lower() for e in extra if e)]
        self._pattern = re.compile("|".join(re.escape(n) for n in needles))

    def is_bot(self, user_agent: str | None) -> bool:
        if not user_agent:
            return True
        return self._pattern.search(user_agent.lower()) is not None


def make_fbc(fbclid: str, now_ms: int) -> str:
    """Meta's format; subdomain index 1 because the server makes it; fbclid kept byte for byte."""
    return f"fb.1.{now_ms}.{fbclid}"


def make_fbp(now_ms: int) -> str:
    return f"fb.1.{now_ms}.{secrets.randbelow(9_000_000_000) + 1_000_000_000}"


def choose_fbc(fbclid: str | None, cookie: str | None, now_ms: int) -> tuple[str | None, bool]:
    """Return (fbc, set_cookie): a new fbc only when absent or the URL's fbclid differs."""
    current = cookie if is_valid_fbc(cookie) else None
    if fbclid and (len(fbclid) > MAX_FBCLID_LENGTH or not _FBCLID_FORM.fullmatch(fbclid)):
        fbclid = None  # a forged or mangled fbclid must not replace a good cookie
    # The fbclid is everything after the third dot (fb.<index>.<ms>.<fbclid>): it may hold dots.
    if fbclid and (current is None or current.split(".", 3)[3] != fbclid):
        return make_fbc(fbclid, now_ms), True
    return current, False


def choose_fbp(cookie: str | None, now_ms: int) -> tuple[str, bool]:
    if is_valid_fbp(cookie):
        return cookie or "", False
    return make_fbp(now_ms), True

"""Where a tracked link sends the visitor: the configured target with its click id filled in
and, if the link says so, the link's own query string forwarded. Only configured targets exist,
so there is no open redirect.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit, urlunsplit

from relay.config import LinkSettings

# A query of name=value pairs made only of characters that unquoting and quote_plus leave
# alone (an ad click's fbclid and utm_* are): parse_qsl splits it on "&" and "=", urlencode
# joins it back the same way; anything else ("+", "%", a name without "=") takes parse_qsl.
_PLAIN_QUERY = re.compile(r"[\w.~-]+=[\w.~-]*(?:&[\w.~-]+=[\w.~-]*)*", re.ASCII)


def query_pairs(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True)``, split directly when the query is plain."""
    if _PLAIN_QUERY.fullmatch(query):
        return [(name, value) for name, _, value in
                (pair.partition("=") for pair in query.split("&"))]
    return parse_qsl(query, keep_blank_values=True)


def destination_url(link: LinkSettings, click_id: str, query: str,
                    pairs: list[tuple[str, str]] | None = None) -> str:
    """The configured target with {click_id} filled and, if asked, the link's query appended;
    ``pairs``: the query already split by ``query_pairs``, to split it only once per click."""
    target = link.destination.replace("{click_id}", click_id)
    if not link.forward_query or not query:
        return target
    if pairs is None:
        pairs = query_pairs(query)
    template = _template(link.destination) if _INERT_CLICK_ID.fullmatch(click_id) else None
    if template is not None:
        extra = [(k, v) for k, v in pairs if k not in template.own_names]
        if _PLAIN_QUERY.fullmatch(query):
            return template.fill(click_id, "&".join(f"{k}={v}" for k, v in extra))
        return template.fill(click_id, urlencode(extra))
    parts = urlsplit(target)
    own = parse_qsl(parts.query, keep_blank_values=True)
    own_names = {name for name, _ in own}
    extra = [(k, v) for k, v in pairs if k not in own_names]
    return urlunsplit(parts._replace(query=urlencode(own + extra)))


# Splitting and re-encoding the destination on every click was a tenth of a redirect's CPU; it
# is done once per destination instead, with "{click_id}" left in, and the id is filled into the
# result. That gives the same URL as filling first and splitting after when the id is made of
# characters that splitting, unquoting and quoting all leave alone (secrets.token_urlsafe's),
# and when "{click_id}" cannot interact with the query's parsing: no "%" escapes in the
# destination's query, no "{click_id}" in a parameter name. Anything else takes the general path.
_INERT_CLICK_ID = re.compile(r"[A-Za-z0-9_-]+")
_QUOTED_PLACEHOLDER = quote_plus("{click_id}")


@dataclass(frozen=True, slots=True)
class _Template:
    head: str  # scheme://netloc/path as urlunsplit writes it
    own_query: str  # the destination's query as urlencode re-writes it
    own_names: frozenset[str]
    fragment: str

    def fill(self, click_id: str, extra_query: str) -> str:
        own = self.own_query.replace(_QUOTED_PLACEHOLDER, click_id)
        query = f"{own}&{extra_query}" if own and extra_query else own or extra_query
        url = self.head.replace("{click_id}", click_id)
        if query:
            url += "?" + query
        if self.fragment:
            url += "#" + self.fragment.replace("{click_id}", click_id)
        return url


@lru_cache(maxsize=256)
def _template(destination: str) -> _Template | None:
    parts = urlsplit(destination)
    if parts.scheme not in ("http", "https") or "%" in parts.query:
        return None
    own = parse_qsl(parts.query, keep_blank_values=True)
    own_names = frozenset(name for name, _ in own)
    if any("{click_id}" in name for name in own_names):
        return None
    return _Template(head=urlunsplit(parts._replace(query="", fragment="")),
                     own_query=urlencode(own), own_names=own_names, fragment=parts.fragment)

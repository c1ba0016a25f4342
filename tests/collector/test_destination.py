"""collector.redirect.destination_url: the per-link template gives exactly the URL that filling
the click id first and re-encoding the query after would give."""

from __future__ import annotations

import itertools
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from collector.destination import destination_url, query_pairs
from relay.config import LinkSettings


def reference_url(link: LinkSettings, click_id: str, query: str) -> str:
    """The straightforward way: fill, split, merge the link's query, re-encode."""
    target = link.destination.replace("{click_id}", click_id)
    if not link.forward_query or not query:
        return target
    parts = urlsplit(target)
    own = parse_qsl(parts.query, keep_blank_values=True)
    names = {name for name, _ in own}
    extra = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in names]
    return urlunsplit(parts._replace(query=urlencode(own + extra)))


DESTINATIONS = [
    "https://shop.example/landing?cid={click_id}",
    "https://shop.example/landing",
    "https://shop.example/{click_id}/landing?a=1&b=&c=x+y#top",
    "https://shop.example/p?utm_source=own&cid={click_id}#frag-{click_id}",
    "https://shop.example/p?q=%41%20b&cid={click_id}",
    "https://shop.example/p?{click_id}=1",
    "http://shop.example:8080/p?cid={click_id}&cid=again",
]
QUERIES = [
    "", "fbclid=abc", "fbclid=AbC-123_x&utm_source=fb&utm_campaign=summer+sale",
    "utm_source=theirs&x=%2F%3F%26", "a=1&a=2&empty=", "weird=%E2%9C%93&plus=a+b",
    "fbclid=IwAR0_x-Y.z~9&utm_source=fb&utm_medium=paid_social", "novalue&a=1", "a=1&&b=2",
    "a=b=c", "&", "=x", "a=1&",
]
CLICK_IDS = ["dAEkb7eYkY3sLxBe", "abc-_09", "with.dot", "percent%41"]


@pytest.mark.parametrize(
    ("destination", "query", "click_id"),
    list(itertools.product(DESTINATIONS, QUERIES, CLICK_IDS)),
)
def test_destination_matches_the_straightforward_construction(destination: str, query: str,
                                                              click_id: str) -> None:
    link = LinkSettings(slug="s", destination=destination, pixels=["1234567890"])

    assert reference_url(link, click_id, query) == destination_url(link, click_id, query)


def test_query_is_not_forwarded_when_the_link_says_so() -> None:
    link = LinkSettings(slug="s", destination="https://shop.example/?cid={click_id}",
                        pixels=["1234567890"], forward_query=False)

    assert "https://shop.example/?cid=abc" == destination_url(link, "abc", "fbclid=x")


@pytest.mark.parametrize("query", QUERIES)
def test_query_pairs_are_what_parse_qsl_gives(query: str) -> None:
    assert parse_qsl(query, keep_blank_values=True) == query_pairs(query)

"""Property-based tests (hypothesis) of what the redirect reads and writes: the request's Cookie
header, the Set-Cookie headers it writes, and the destination template."""

from __future__ import annotations

from urllib.parse import urlsplit

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from litestar import Request
from litestar.datastructures import Cookie

from collector.cookies import PlainCookie
from collector.destination import destination_url
from collector.visitor import FBC_COOKIE, choose_fbc, is_valid_fbc, make_fbc
from relay.config import LinkSettings
from tests.collector.test_destination import reference_url

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, database=None,
                             suppress_health_check=[HealthCheck.too_slow])
NOW_MS = 1_790_000_000_000
URL_SAFE = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
                   min_size=1, max_size=40)
# Whatever a client can put in a header: latin-1 text, as the ASGI server hands it over.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=300)
DESTINATIONS = st.sampled_from([
    "https://shop.example/landing?cid={click_id}",
    "https://shop.example/landing",
    "https://shop.example/{click_id}/landing?a=1&b=&c=x+y#top",
    "https://t.me/shop_bot?start={click_id}",
    "http://shop.example:8080/p?x=%2F&cid={click_id}",
])


def parse_cookie_string(header: str) -> dict[str, str]:
    """The cookies the collector sees (``request.cookies``) for this Cookie header."""
    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "state": {},
             "headers": [(b"cookie", header.encode("latin-1"))]}
    cookies: dict[str, str] = Request(scope).cookies  # type: ignore[arg-type]
    return cookies


# -- the Cookie header ----------------------------------------------------------------------------
@PROPERTY_SETTINGS
@given(header_text)
@example("_fbc=fb.1.1790000000000.abc; _fbc=other")
@example('_fbc="fb.1.1790000000000.a\\"b"; ;;=; =x')
def test_any_cookie_header_parses_into_strings(header: str) -> None:
    cookies = parse_cookie_string(header)

    assert all(isinstance(k, str) and isinstance(v, str) for k, v in cookies.items())


@PROPERTY_SETTINGS
@given(header_text, st.none() | URL_SAFE)
def test_an_fbc_read_from_any_cookie_header_is_valid_or_replaced(header: str,
                                                                  fbclid: str | None) -> None:
    cookie = parse_cookie_string(header).get(FBC_COOKIE)

    fbc, _ = choose_fbc(fbclid, cookie, NOW_MS)

    assert fbc is None or is_valid_fbc(fbc)


# -- Set-Cookie -----------------------------------------------------------------------------------
cookie_values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80)


@PROPERTY_SETTINGS
@given(st.sampled_from(["_fbc", "_fbp", "_prclk"]), cookie_values,
       st.none() | st.sampled_from(["shop.example", ".shop.example"]), st.booleans())
def test_plain_cookie_writes_the_same_bytes_as_litestar(name: str, value: str,
                                                        domain: str | None, secure: bool) -> None:
    options = {"key": name, "value": value, "max_age": 7_776_000, "path": "/", "domain": domain,
               "samesite": "lax", "secure": secure}

    assert Cookie(**options).to_encoded_header() == PlainCookie(**options).to_encoded_header()


@PROPERTY_SETTINGS
@given(URL_SAFE)
def test_a_set_fbc_cookie_reads_back_as_the_same_fbc(fbclid: str) -> None:
    fbc = make_fbc(fbclid, NOW_MS)
    _, header = PlainCookie(key=FBC_COOKIE, value=fbc, path="/").to_encoded_header()

    pair = header.decode("latin-1").split(";", 1)[0]

    assert fbc == parse_cookie_string(pair)[FBC_COOKIE]


# -- the destination template ---------------------------------------------------------------------
@PROPERTY_SETTINGS
@given(DESTINATIONS, URL_SAFE, header_text, st.booleans())
def test_the_template_gives_the_straightforward_url(destination: str, click_id: str, query: str,
                                                    forward: bool) -> None:
    link = LinkSettings(slug="s", destination=destination, forward_query=forward)

    assert reference_url(link, click_id, query) == destination_url(link, click_id, query)


@PROPERTY_SETTINGS
@given(DESTINATIONS, URL_SAFE, header_text)
@example("https://shop.example/landing", "x", "next=//evil.example&@evil.example")
@example("https://shop.example/{click_id}/landing", "x", "#@evil.example/?a=b")
def test_no_query_or_click_id_changes_where_the_visitor_goes(destination: str, click_id: str,
                                                             query: str) -> None:
    link = LinkSettings(slug="s", destination=destination)
    configured = urlsplit(destination)

    sent_to = urlsplit(destination_url(link, click_id, query))

    assert (configured.scheme, configured.netloc) == (sent_to.scheme, sent_to.netloc)

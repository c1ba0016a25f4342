"""collector.visitor: client IP behind proxies, bot detection, the _fbc and _fbp cookies."""

from __future__ import annotations

import pytest

from collector.visitor import (
    BotDetector,
    TrustedProxies,
    choose_fbc,
    choose_fbp,
    client_ip,
    is_valid_fbc,
    is_valid_fbp,
    make_fbc,
    make_fbp,
)

PROXIES = TrustedProxies.parse(["10.0.0.0/8", "fd00::/8"])
PROXY = "10.0.0.2"
NOW_MS = 1_790_000_000_123
OLD_MS = 1_780_000_000_000
FBCLID = "IwAR2F4-dbP0l7Mn1Iaw_QQGCINEz7PYXQvwjNwB_qa2ofrHy"

# -- client_ip ----------------------------------------------------------------------------------


def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    headers = {"x-forwarded-for": "198.51.100.1", "x-real-ip": "198.51.100.2"}

    assert "203.0.113.7" == client_ip("203.0.113.7", headers, PROXIES)


def test_a_trusted_peer_forwards_the_rightmost_hop_that_is_not_a_proxy() -> None:
    headers = {"x-forwarded-for": "198.51.100.1, 10.0.0.9, 10.0.0.5"}

    assert "198.51.100.1" == client_ip(PROXY, headers, PROXIES)


def test_a_spoofed_leftmost_forwarded_address_is_ignored() -> None:
    # The visitor sent "X-Forwarded-For: 6.6.6.6"; the proxy appended the real address.
    headers = {"x-forwarded-for": "6.6.6.6, 198.51.100.1"}

    assert "198.51.100.1" == client_ip(PROXY, headers, PROXIES)


def test_forwarded_hops_that_are_all_proxies_give_the_leftmost() -> None:
    headers = {"x-forwarded-for": "10.0.0.7, 10.0.0.5"}

    assert "10.0.0.7" == client_ip(PROXY, headers, PROXIES)


def test_x_real_ip_from_a_trusted_peer_is_the_client() -> None:
    assert "198.51.100.2" == client_ip(PROXY, {"x-real-ip": "198.51.100.2"}, PROXIES)


def test_x_real_ip_from_an_untrusted_peer_is_ignored() -> None:
    headers = {"x-real-ip": "198.51.100.2"}

    assert "203.0.113.7" == client_ip("203.0.113.7", headers, PROXIES)


def test_an_ipv6_forwarded_address_is_returned_in_canonical_form() -> None:
    headers = {"x-forwarded-for": "2001:DB8:0:0::1"}

    assert "2001:db8::1" == client_ip(PROXY, headers, PROXIES)


def test_a_bracketed_ipv6_address_with_port_is_unwrapped() -> None:
    headers = {"x-forwarded-for": "[2001:db8::7]:443"}

    assert "2001:db8::7" == client_ip(PROXY, headers, PROXIES)


def test_an_ipv6_proxy_is_trusted_by_network() -> None:
    headers = {"x-forwarded-for": "2001:db8::7, fd00::3"}

    assert "2001:db8::7" == client_ip("fd00::1", headers, PROXIES)


@pytest.mark.parametrize(
    "forwarded",
    ["unknown", "not-an-ip, also garbage", "999.1.1.1", "", " , ,", "\x00\xff", "1.2.3.4.5"],
)
def test_garbage_forwarded_for_falls_back_to_the_peer(forwarded: str) -> None:
    assert PROXY == client_ip(PROXY, {"x-forwarded-for": forwarded}, PROXIES)


def test_garbage_forwarded_hops_are_skipped() -> None:
    headers = {"x-forwarded-for": "198.51.100.1, unknown, 10.0.0.5"}

    assert "198.51.100.1" == client_ip(PROXY, headers, PROXIES)


def test_garbage_x_real_ip_falls_back_to_the_peer() -> None:
    assert PROXY == client_ip(PROXY, {"x-real-ip": "localhost"}, PROXIES)


def test_no_peer_gives_no_address() -> None:
    assert None is client_ip(None, {"x-forwarded-for": "198.51.100.1"}, PROXIES)


def test_no_trusted_proxies_means_forwarded_headers_are_never_believed() -> None:
    headers = {"x-forwarded-for": "198.51.100.1"}

    assert PROXY == client_ip(PROXY, headers, TrustedProxies.parse([]))


def test_a_peer_that_is_not_an_address_is_not_trusted() -> None:
    assert False is PROXIES.trusts("testclient")


# -- BotDetector --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user_agent",
    [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "WhatsApp/2.23.20.0 A",
        "Twitterbot/1.0",
        "TelegramBot (like TwitterBot)",
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
        "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/120.0 Safari/537.36",
        "python-requests/2.32.3",
        "Facebot",
        "Mozilla/5.0 (compatible; Pinterestbot/1.0; +http://www.pinterest.com/bot.html)",
    ],
)
def test_crawlers_and_link_previews_are_bots(user_agent: str) -> None:
    assert True is BotDetector().is_bot(user_agent)


@pytest.mark.parametrize("user_agent", [None, ""])
def test_a_missing_user_agent_is_a_bot(user_agent: str | None) -> None:
    assert True is BotDetector().is_bot(user_agent)


@pytest.mark.parametrize(
    "user_agent",
    [
        "curl/8.5.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
        # Facebook's in-app browser is a person who clicked an ad, not the link previewer.
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/470.0.0.35.106;FBBV/600000000]",
        # A phone whose brand ends in "bot", and Pinterest's in-app browser.
        "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/90.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 12; Pixel 6 Build/SD1A; wv) AppleWebKit/537.36 "
        "Chrome/96.0 Mobile Safari/537.36 [Pinterest/Android]",
    ],
)
def test_people_are_not_bots(user_agent: str) -> None:
    assert False is BotDetector().is_bot(user_agent)


def test_extra_bot_user_agents_match_case_insensitively() -> None:
    detector = BotDetector(["AcmeMonitor"])

    assert True is detector.is_bot("acmemonitor/3.1 (uptime)")


# -- fbc ----------------------------------------------------------------------------------------


def test_a_new_fbc_is_made_when_there_is_no_cookie() -> None:
    assert (f"fb.1.{NOW_MS}.{FBCLID}", True) == choose_fbc(FBCLID, None, NOW_MS)


def test_the_cookie_is_kept_when_the_fbclid_is_the_same() -> None:
    cookie = f"fb.1.{OLD_MS}.{FBCLID}"

    assert (cookie, False) == choose_fbc(FBCLID, cookie, NOW_MS)


def test_a_different_fbclid_replaces_the_cookie() -> None:
    cookie = f"fb.1.{OLD_MS}.SomeOlderClickId"

    assert (f"fb.1.{NOW_MS}.{FBCLID}", True) == choose_fbc(FBCLID, cookie, NOW_MS)


def test_an_fbclid_differing_only_in_case_replaces_the_cookie() -> None:
    cookie = f"fb.1.{OLD_MS}.{FBCLID.lower()}"

    assert (f"fb.1.{NOW_MS}.{FBCLID}", True) == choose_fbc(FBCLID, cookie, NOW_MS)


@pytest.mark.parametrize("fbclid", ["AbC-_x", "IwY2xjawE--__Zz09", "ABCDEFabcdef0123456789-_"])
def test_the_fbclid_is_kept_byte_for_byte(fbclid: str) -> None:
    fbc, _ = choose_fbc(fbclid, None, NOW_MS)

    assert fbclid == (fbc or "").split(".", 3)[3]


def test_the_cookie_is_kept_when_the_url_has_no_fbclid() -> None:
    cookie = f"fb.1.{OLD_MS}.{FBCLID}"

    assert (cookie, False) == choose_fbc(None, cookie, NOW_MS)


def test_no_fbclid_and_no_cookie_gives_no_fbc() -> None:
    assert (None, False) == choose_fbc(None, None, NOW_MS)


def test_a_malformed_cookie_is_ignored() -> None:
    assert (None, False) == choose_fbc(None, "fb.1.yesterday.abc", NOW_MS)


@pytest.mark.parametrize(
    "fbclid", ["a b", "a;b", "a\r\nSet-Cookie: x=y", "caf\u00e9", "\ufffd", 'a"b', "a\\b", "a,b"]
)
def test_an_fbclid_that_cannot_be_a_cookie_value_is_ignored(fbclid: str) -> None:
    # Such an fbc would be refused by Meta (and by is_valid_fbc) and cannot be set as a cookie.
    cookie = f"fb.1.{OLD_MS}.{FBCLID}"

    assert (cookie, False) == choose_fbc(fbclid, cookie, NOW_MS)


def test_make_fbc_uses_subdomain_index_1() -> None:
    assert f"fb.1.{NOW_MS}.{FBCLID}" == make_fbc(FBCLID, NOW_MS)


@pytest.mark.parametrize(
    "value",
    [f"fb.1.{NOW_MS}.{FBCLID}", f"fb.2.{NOW_MS}.x", "fb.1.1790000000.abc"],
)
def test_well_formed_fbc_values_are_valid(value: str) -> None:
    assert True is is_valid_fbc(value)


@pytest.mark.parametrize(
    "value",
    [None, "", FBCLID, f"fb.1.{NOW_MS}.", f"fb.1.{NOW_MS}.a b", "fb.x.1790000000123.abc",
     "fb.1.17900.abc", f"gb.1.{NOW_MS}.abc", f'"fb.1.{NOW_MS}.abc"'],
)
def test_malformed_fbc_values_are_invalid(value: str | None) -> None:
    assert False is is_valid_fbc(value)


# -- fbp ----------------------------------------------------------------------------------------


def test_make_fbp_is_subdomain_index_time_and_ten_random_digits() -> None:
    prefix, index, created, random = make_fbp(NOW_MS).split(".")

    assert ("fb", "1", str(NOW_MS), 10, True) == (
        prefix, index, created, len(random), random.isdigit()
    )


def test_make_fbp_is_random_per_visitor() -> None:
    assert 20 == len({make_fbp(NOW_MS) for _ in range(20)})


def test_made_fbp_values_are_valid() -> None:
    assert True is is_valid_fbp(make_fbp(NOW_MS))


@pytest.mark.parametrize(
    "value", [None, "", f"fb.1.{NOW_MS}.abc", "fb.1.17900.1234567890", f"fb.1.{NOW_MS}"]
)
def test_malformed_fbp_values_are_invalid(value: str | None) -> None:
    assert False is is_valid_fbp(value)


def test_a_valid_fbp_cookie_is_kept() -> None:
    cookie = f"fb.1.{OLD_MS}.1234567890"

    assert (cookie, False) == choose_fbp(cookie, NOW_MS)


def test_a_missing_or_malformed_fbp_cookie_is_replaced() -> None:
    fbp, new = choose_fbp("garbage", NOW_MS)

    assert (True, True) == (new, is_valid_fbp(fbp))


def test_an_oversized_fbclid_is_ignored() -> None:
    assert (None, False) == choose_fbc("a" * 1001, None, 1_790_000_000_000)

"""Access to the dashboard: sessions, CSRF, roles, throttling, and nothing secret on a page."""

from __future__ import annotations

import json
import time

import fakeredis
import pytest
from litestar.testing import AsyncTestClient

from dashboard import auditlog, security
from relay import keys
from relay.config import Settings
from tests.dashboard.conftest import (
    OPERATOR_PASSWORD,
    PIXEL,
    csrf_of,
    log_in,
    soup,
)
from tests.dashboard.test_pages import add_dead_letter

PAGES = ["/", "/fragments/overview", "/dead-letters", f"/dead-letter?key={PIXEL}:Purchase:e1",
         "/find?q=e1", "/links", "/pixels", "/audit", "/jobs/abc", "/fragments/jobs/abc"]


@pytest.mark.parametrize("path", PAGES)
async def test_every_route_without_a_session_gets_the_login(anonymous: AsyncTestClient,
                                                            path: str) -> None:
    answer = await anonymous.get(path, follow_redirects=False)

    assert (303, f"/login?next={path.split('?')[0]}") == (
        answer.status_code, answer.headers["location"].split("%3F")[0])


async def test_a_fragment_without_a_session_gets_a_401_that_sends_the_page_to_the_login(
        anonymous: AsyncTestClient) -> None:
    answer = await anonymous.get("/fragments/overview", headers={
        "HX-Request": "true", "HX-Current-URL": "http://dash.local/dead-letters?kind=rejected"})

    assert (401, "/login?next=/dead-letters%3Fkind%3Drejected", "text/plain") == (
        answer.status_code, answer.headers["hx-redirect"],
        answer.headers["content-type"].split(";")[0])
    assert "<form" not in answer.text


async def test_post_without_a_csrf_token_is_refused(operator: AsyncTestClient,
                                                    redis: fakeredis.FakeRedis) -> None:
    add_dead_letter(redis, "e1")

    answer = await operator.post("/dead-letters/act", data={
        "action": "requeue", "scope": "one", "key": f"{PIXEL}:Purchase:e1"})

    assert (403, 1) == (answer.status_code, redis.zcard(keys.dead_letters()))
    assert "CSRF" in soup(answer.text).find(id="error-detail").get_text()


async def test_login_without_a_csrf_token_is_refused(anonymous: AsyncTestClient) -> None:
    answer = await anonymous.post("/login", data={"name": "op", "password": OPERATOR_PASSWORD})

    assert 403 == answer.status_code


async def test_a_viewer_cannot_requeue(viewer: AsyncTestClient,
                                       redis: fakeredis.FakeRedis) -> None:
    add_dead_letter(redis, "e1")
    page = (await viewer.get("/dead-letters")).text

    answer = await viewer.post("/dead-letters/act", data={
        "action": "requeue", "scope": "one", "key": f"{PIXEL}:Purchase:e1",
        "_csrf_token": csrf_of(page)})

    assert (403, 1) == (answer.status_code, redis.zcard(keys.dead_letters()))
    assert [] == soup(page).select("#dead-table input[name=keys]")  # no checkboxes either


async def test_wrong_password_is_refused_and_audited(anonymous: AsyncTestClient,
                                                     redis: fakeredis.FakeRedis) -> None:
    page = (await anonymous.get("/login")).text

    answer = await anonymous.post("/login", data={"name": "op", "password": "nope-nope-nope",
                                                  "_csrf_token": csrf_of(page)})

    assert (401, "That name and password do not match an operator.") == (
        answer.status_code, soup(answer.text).find(id="login-error").get_text())
    assert ["login_failed"] == [e.action for e in auditlog.recent(redis)]


async def test_repeated_failures_slow_down_the_name(anonymous: AsyncTestClient) -> None:
    page = (await anonymous.get("/login")).text
    token = csrf_of(page)
    statuses = []
    for _ in range(6):
        answer = await anonymous.post("/login", data={"name": "op", "password": "wrong-wrong",
                                                      "_csrf_token": token})
        statuses.append(answer.status_code)

    # Then even the right password must wait.
    right = await anonymous.post("/login", data={"name": "op", "password": OPERATOR_PASSWORD,
                                                 "_csrf_token": token})

    assert ([401] * 5 + [429], 429) == (statuses, right.status_code)
    assert "try again in" in soup(right.text).find(id="login-error").get_text()


async def test_repeated_failures_slow_down_the_address_whatever_the_name(
        anonymous: AsyncTestClient) -> None:
    token = csrf_of((await anonymous.get("/login")).text)
    statuses = []
    for i in range(6):  # a new name each time: only the address is the same
        answer = await anonymous.post("/login", data={"name": f"guess-{i}",
                                                      "password": "wrong-wrong",
                                                      "_csrf_token": token})
        statuses.append(answer.status_code)

    assert [401] * 5 + [429] == statuses


async def test_a_session_expires_when_unused_and_each_request_renews_it(
        operator: AsyncTestClient, redis: fakeredis.FakeRedis, settings: Settings) -> None:
    [session_key] = redis.scan_iter(f"{keys.dashboard_sessions()}*")  # the test's fakeredis
    redis.expire(session_key, 5)  # as if unused for all but 5 s of the idle timeout

    await operator.get("/")

    idle = settings.dashboard.session_idle_timeout_s
    assert idle - 5 <= redis.ttl(session_key) <= idle


async def test_a_session_ends_its_absolute_timeout_after_the_login(
        operator: AsyncTestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    later = time.time() + settings.dashboard.session_max_age_s + 1
    monkeypatch.setattr(security.time, "time", lambda: later)

    answer = await operator.get("/pixels", follow_redirects=False)

    assert (303, "/login?next=/pixels") == (answer.status_code, answer.headers["location"])


async def test_logout_ends_the_session(operator: AsyncTestClient,
                                       redis: fakeredis.FakeRedis) -> None:
    page = (await operator.get("/")).text
    sessions_before = len(list(redis.scan_iter(f"{keys.dashboard_sessions()}*")))

    await operator.post("/logout", data={"_csrf_token": csrf_of(page)})
    after = await operator.get("/", follow_redirects=False)

    assert (1, 0, 303) == (sessions_before,
                           len(list(redis.scan_iter(f"{keys.dashboard_sessions()}*"))),
                           after.status_code)


async def test_login_starts_a_new_session_id(anonymous: AsyncTestClient) -> None:
    # planted by someone else
    anonymous.cookies.set("pixelrelay_session", "a" * 64, domain="testserver.local")

    await log_in(anonymous, "op", OPERATOR_PASSWORD)

    assert anonymous.cookies.get("pixelrelay_session", domain="testserver.local") not in (
        None, "a" * 64)


async def test_session_cookie_is_httponly_and_secure_over_tls(
        anonymous: AsyncTestClient) -> None:
    page = (await anonymous.get("/login")).text
    answer = await anonymous.post("https://testserver.local/login", data={
        "name": "op", "password": OPERATOR_PASSWORD, "_csrf_token": csrf_of(page)},
        follow_redirects=False)

    cookie = next(c for c in answer.headers.get_list("set-cookie")
                  if c.startswith("pixelrelay_session="))
    assert {"httponly", "secure", "samesite=lax"} <= {p.strip().lower()
                                                      for p in cookie.split(";")}


async def test_login_does_not_redirect_to_another_site(anonymous: AsyncTestClient) -> None:
    page = (await anonymous.get("/login")).text
    answer = await anonymous.post("/login", data={
        "name": "op", "password": OPERATOR_PASSWORD, "_csrf_token": csrf_of(page),
        "next": "//evil.example/x"}, follow_redirects=False)

    assert "/" == answer.headers["location"]


async def test_no_page_shows_a_token_raw_ip_or_user_agent(operator: AsyncTestClient,
                                                          redis: fakeredis.FakeRedis) -> None:
    add_dead_letter(redis, "e1", ip="203.0.113.77", ua="Mozilla/5.0 SecretAgent")
    texts = []
    for path in ["/", "/dead-letters", f"/dead-letter?key={PIXEL}:Purchase:e1", "/find?q=e1",
                 "/links", "/pixels", "/audit"]:
        answer = await operator.get(path)
        assert 200 == answer.status_code, path
        texts.append(answer.text)

    everything = "\n".join(texts)
    assert [] == [s for s in ("203.0.113.77", "SecretAgent", "joe@example.com", "argon2")
                  if s in everything]


async def test_pages_carry_a_strict_content_security_policy(operator: AsyncTestClient) -> None:
    answer = await operator.get("/")

    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert [] == [s for s in soup(answer.text).find_all("script") if not s.get("src")]


async def test_a_viewer_sees_every_page_but_no_button_that_changes_something(
        viewer: AsyncTestClient, redis: fakeredis.FakeRedis) -> None:
    key = add_dead_letter(redis, "e1")
    paths = ["/", "/fragments/overview", "/dead-letters", f"/dead-letter?key={key}",
             "/find?q=e1", "/links", "/pixels", "/audit"]

    answers = {p: await viewer.get(p) for p in paths}

    assert {p: 200 for p in paths} == {p: a.status_code for p, a in answers.items()}
    actions = [b.get("value") for a in answers.values()
               for b in soup(a.text).select("button[name=action]")]
    assert [] == actions


async def test_an_htmx_request_carries_the_csrf_token_of_the_body_s_hx_headers(
        operator: AsyncTestClient, redis: fakeredis.FakeRedis) -> None:
    key = add_dead_letter(redis, "e1")
    body = soup((await operator.get("/dead-letters")).text).body
    headers = json.loads(body["hx-headers"])

    answer = await operator.post("/dead-letters/act", headers={**headers, "HX-Request": "true"},
                                 data={"action": "discard", "scope": "one", "key": key},
                                 follow_redirects=False)

    assert (["x-csrftoken"], 303, 0) == (list(headers), answer.status_code,
                                         redis.zcard(keys.dead_letters()))

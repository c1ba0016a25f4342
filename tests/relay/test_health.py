"""relay.health: the minute check of each pixel's token and the Graph API's reachability."""

from __future__ import annotations

import fakeredis
import httpx

from relay.config import MetaSettings, settings_from_mapping
from relay.health import ELECTION_KEY, RECHECK_UNREACHABLE_S, PixelHealth
from relay.meta_client import MetaClient

SETTINGS = settings_from_mapping(
    {"pixels": [{"id": "1234567890", "access_token_env": "GOOD"},
                {"id": "2234567890", "access_token_env": "BAD"}]},
    environ={"GOOD": "good-token", "BAD": "expired-token"},
)


def graph(request: httpx.Request) -> httpx.Response:
    if request.url.params["access_token"] == "good-token":
        return httpx.Response(200, json={"id": request.url.path.rsplit("/", 1)[-1]})
    return httpx.Response(401, json={"error": {
        "message": "Error validating access token", "type": "OAuthException", "code": 190,
        "fbtrace_id": "trace-1"}})


def health(redis: fakeredis.FakeRedis, calls: list[httpx.Request]) -> PixelHealth:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return graph(request)

    return PixelHealth(redis, MetaClient(MetaSettings(), httpx.MockTransport(handler)))


def test_a_valid_token_is_ok_and_an_expired_one_is_reported_with_metas_code() -> None:
    redis = fakeredis.FakeRedis()
    checker = health(redis, [])

    checker.check_if_due(SETTINGS.pixels, 60)

    good, bad = (checker.status(p.id) for p in SETTINGS.pixels)
    assert good is not None and bad is not None
    assert (True, None) == (good["ok"], good["error"])
    assert (False, 190, "trace-1") == (bad["ok"], bad["error"]["code"],  # type: ignore[index]
                                       bad["error"]["fbtrace_id"])  # type: ignore[index]


def test_only_one_worker_checks_per_interval() -> None:
    redis = fakeredis.FakeRedis()
    calls: list[httpx.Request] = []
    first, second = health(redis, calls), health(redis, calls)

    assert (True, False) == (first.check_if_due(SETTINGS.pixels, 60),
                             second.check_if_due(SETTINGS.pixels, 60))
    assert 2 == len(calls)


def test_the_token_never_lands_in_the_stored_status() -> None:
    redis = fakeredis.FakeRedis()
    health(redis, []).check_if_due(SETTINGS.pixels, 60)

    stored = b"".join(redis.get(k) or b"" for k in redis.keys("pixelrelay:health:1*")
                      + redis.keys("pixelrelay:health:2*"))
    assert b"good-token" not in stored and b"expired-token" not in stored
    assert stored


def test_an_unreachable_graph_api_is_checked_again_within_seconds_not_a_minute() -> None:
    # Given a Graph API that is not listening yet
    redis = fakeredis.FakeRedis()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    checker = PixelHealth(redis, MetaClient(MetaSettings(), httpx.MockTransport(refuse)))

    # When a worker checks
    checker.check_if_due(SETTINGS.pixels, 60)

    # Then the failure is recorded, and the next check is due within RECHECK_UNREACHABLE_S
    status = checker.status(SETTINGS.pixels[0].id)
    assert status is not None and "Meta unreachable" in str(status["error"])
    assert 0 < redis.ttl(ELECTION_KEY) <= RECHECK_UNREACHABLE_S


def test_a_token_error_keeps_the_whole_interval() -> None:
    redis = fakeredis.FakeRedis()
    health(redis, []).check_if_due(SETTINGS.pixels, 60)

    assert redis.ttl(ELECTION_KEY) > RECHECK_UNREACHABLE_S

"""Meta's official Python SDK (``facebook-business``) against ``python -m fakemeta``.

The SDK posts form-encoded ``data`` as a list of JSON strings with ``access_token`` and
``appsecret_proof`` in the query; the fake must take what Meta takes and refuse, with Meta's
codes, what Meta refuses. The process is real (granian on a loopback port).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from facebook_business.adobjects.adspixel import AdsPixel

from tests.meta_sdk import Event, EventRequest, FacebookRequestError, purchase, sdk_api
from tests.support import DEMO_PIXEL, Process, free_port, wait_http

TOKEN, APP_SECRET = "sdk-token", "sdk-app-secret"
EIGHT_DAYS_S = 8 * 86_400


@pytest.fixture(scope="module")
def fake_meta_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    process = Process(
        [sys.executable, "-m", "fakemeta"],
        tmp_path_factory.mktemp("sdk") / "fakemeta.log",
        env={"FAKEMETA_PORT": str(port), "FAKEMETA_TOKENS": TOKEN,
             "FAKEMETA_APP_SECRETS": f"{TOKEN}:{APP_SECRET}"},
    ).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/_fake/healthz")
        yield url
    finally:
        process.stop()


def refusal(request: EventRequest) -> tuple[int, int | None, int]:
    with pytest.raises(FacebookRequestError) as caught:
        request.execute()
    error = caught.value
    return error.api_error_code(), error.api_error_subcode(), error.http_status()


def test_the_sdks_purchase_is_accepted_and_kept_as_sent(fake_meta_url: str) -> None:
    with sdk_api(fake_meta_url, TOKEN, APP_SECRET):
        response = EventRequest(pixel_id=DEMO_PIXEL, events=[purchase("sdk-ok-1"),
                                                               purchase("sdk-ok-2")]).execute()

    stored = httpx.get(f"{fake_meta_url}/_fake/events", params={"pixel_id": DEMO_PIXEL}).json()
    assert 2 == response.events_received
    assert {"sdk-ok-1", "sdk-ok-2"} <= {e["event_id"] for e in stored["events"]}
    # the SDK hashed the email itself; the fake kept it as the SDK sent it
    assert all(len(e["user_data"]["em"][0]) == 64 for e in stored["events"])


def test_a_wrong_appsecret_proof_from_the_sdk_is_refused(fake_meta_url: str) -> None:
    with sdk_api(fake_meta_url, TOKEN, "not-the-app-secret"):
        assert (100, None, 400) == refusal(EventRequest(pixel_id=DEMO_PIXEL,
                                                        events=[purchase("sdk-proof")]))


def test_an_event_older_than_seven_days_is_refused_with_2804003(fake_meta_url: str) -> None:
    old = purchase("sdk-old")
    old.event_time = int(time.time()) - EIGHT_DAYS_S

    with sdk_api(fake_meta_url, TOKEN, APP_SECRET):
        assert (100, 2804003, 400) == refusal(EventRequest(pixel_id=DEMO_PIXEL, events=[old]))


def test_a_malformed_fbc_is_refused_with_2804001(fake_meta_url: str) -> None:
    with sdk_api(fake_meta_url, TOKEN, APP_SECRET):
        event: Event = purchase("sdk-fbc", fbc="not-an-fbc")
        assert (100, 2804001, 400) == refusal(EventRequest(pixel_id=DEMO_PIXEL, events=[event]))


def test_an_unhashed_email_through_the_sdks_edge_is_refused_with_2804019(
        fake_meta_url: str) -> None:
    # The SDK's Event hashes em; its AdsPixel edge sends data as given, as integrations that
    # build their own payloads do.
    raw = {"event_name": "Lead", "event_time": int(time.time()), "action_source": "email",
           "user_data": {"em": ["jane@example.com"]}}

    with sdk_api(fake_meta_url, TOKEN, APP_SECRET), pytest.raises(FacebookRequestError) as caught:
        AdsPixel(DEMO_PIXEL).create_event(fields=[], params={"data": [json.dumps(raw)]})

    assert (100, 2804019) == (caught.value.api_error_code(), caught.value.api_error_subcode())

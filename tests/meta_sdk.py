"""Meta's official Python SDK (``facebook-business``) pointed at a base URL of ours.

The SDK keeps its Graph URL in ``FacebookSession.GRAPH`` and its default API in a class
attribute; ``sdk_api`` sets both for one test and puts them back, and never enables the SDK's
crash reporter (it would post to Meta).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from facebook_business.adobjects.serverside.action_source import ActionSource
from facebook_business.adobjects.serverside.custom_data import CustomData
from facebook_business.adobjects.serverside.event import Event
from facebook_business.adobjects.serverside.event_request import EventRequest
from facebook_business.adobjects.serverside.user_data import UserData
from facebook_business.api import FacebookAdsApi, FacebookSession
from facebook_business.exceptions import FacebookRequestError

__all__ = ["ActionSource", "CustomData", "Event", "EventRequest", "FacebookRequestError",
           "UserData", "purchase", "sdk_api"]

API_VERSION = "v26.0"


@contextlib.contextmanager
def sdk_api(base_url: str, access_token: str, app_secret: str | None = None
            ) -> Iterator[FacebookAdsApi]:
    """The SDK's default API talking to ``base_url``: the one line an integration changes."""
    saved_graph, saved_api = FacebookSession.GRAPH, FacebookAdsApi.get_default_api()
    FacebookSession.GRAPH = base_url.rstrip("/")
    try:
        yield FacebookAdsApi.init(access_token=access_token, app_secret=app_secret,
                                  api_version=API_VERSION, crash_log=False)
    finally:
        FacebookSession.GRAPH = saved_graph
        FacebookAdsApi.set_default_api(saved_api)


def purchase(event_id: str, **user: Any) -> Event:
    """A website Purchase built the way the SDK's docs show (the SDK hashes the email)."""
    user_data = {"email": "jane@example.com", "client_ip_address": "203.0.113.7",
                 "client_user_agent": "Mozilla/5.0 (SDK test)", **user}
    return Event(
        event_name="Purchase", event_time=int(time.time()), event_id=event_id,
        action_source=ActionSource.WEBSITE, event_source_url="https://shop.example/checkout",
        user_data=UserData(**user_data), custom_data=CustomData(currency="eur", value=42.5),
    )

"""Mixed, realistic traffic for a running collector: ad clicks, browser beacons, server events.

Not part of ``make test``; run it headless against a collector you started, for example the
one ``make up`` runs (its demo key and origins differ from the test defaults, hence the flags):

    make up        # in another terminal
    .venv/bin/locust -f loadtest/locustfile.py --headless -u 200 -r 20 -t 2m \\
        --host http://127.0.0.1:8000 --api-key demo-api-key --origin http://127.0.0.1:8000

or against the benchmark's collector (private Redis, one granian worker), whose configuration
(``tests.support.write_config``) the defaults match (``--pixel 1234567890 --slug demo
--api-key test-api-key --origin https://shop.example``):

    .venv/bin/python loadtest/bench_redirect.py --serve     # prints the URL; Ctrl-C stops it
    .venv/bin/locust -f loadtest/locustfile.py --headless -u 200 -r 20 -t 2m --host <that URL>

``-u`` is the number of simulated people; add ``--csv var/locust`` for per-endpoint CSV files.

Who is simulated:

* ``Visitor`` (most users): clicks an ad link (``GET /go/<slug>?fbclid=...``, a 302 that sets
  ``_fbc``/``_fbp``/``_prclk``), then browses the shop, whose pages send beacons
  (``POST /v1/beacon``, ``text/plain`` like ``navigator.sendBeacon``, with the shop's
  ``Origin`` and the cookies from the click). Now and then they click another ad.
* ``ShopBackend`` (few users): the shop's server posting conversions to ``/v1/events`` with the
  Bearer API key, one event or a batch of up to 20, often naming the click id of a visitor
  seen earlier so the relay can enrich the event from the click.

Every answer is checked (302 with a Location, 204, 202 with the accepted count); anything else
is a locust failure, with the body in the message.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import deque
from typing import Any

from locust import FastHttpUser, between, events, task

BROWSER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
)
CAMPAIGNS = ("spring-sale", "retargeting", "lookalike-1pct", "brand")
BROWSING_EVENTS = (("ViewContent", 6), ("AddToCart", 2), ("InitiateCheckout", 1))
SERVER_EVENTS = (("Purchase", 5), ("Lead", 3), ("CompleteRegistration", 2))

# Click ids that visitors received, for the backend's events to refer to (shared by all users).
recent_clicks: deque[str] = deque(maxlen=5000)


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--pixel", default="1234567890", help="pixel id the events go to")
    parser.add_argument("--slug", default="demo", help="link slug clicked: /go/<slug>")
    parser.add_argument("--api-key", default="test-api-key", help="Bearer key for /v1/events")
    parser.add_argument("--origin", default="https://shop.example",
                        help="shop origin the beacons come from (in collector.allowed_origins)")


def _weighted(choices: tuple[tuple[str, int], ...]) -> str:
    names, weights = zip(*choices, strict=True)
    return random.choices(names, weights)[0]


def _fbclid() -> str:
    """Shaped like Meta's: IwAR + 59 URL-safe characters."""
    return "IwAR" + uuid.uuid4().hex + uuid.uuid4().hex[:27]


class Visitor(FastHttpUser):
    """A person who clicks an ad and then browses the shop."""

    weight = 10
    wait_time = between(0.5, 4)

    def on_start(self) -> None:
        self.user_agent = random.choice(BROWSER_AGENTS)
        self.page = f"{self.options.origin}/"
        self.click()

    @property
    def options(self) -> Any:
        return self.environment.parsed_options

    @task(1)
    def click(self) -> None:
        query = f"fbclid={_fbclid()}&utm_source=facebook&utm_medium=paid_social" \
                f"&utm_campaign={random.choice(CAMPAIGNS)}"
        with self.client.get(f"/go/{self.options.slug}?{query}", name="/go/[slug]",
                             headers={"User-Agent": self.user_agent,
                                      "Referer": "https://m.facebook.com/"},
                             allow_redirects=False, catch_response=True) as response:
            if response.status_code != 302 or not response.headers.get("location"):
                response.failure(f"expected a 302 with a Location, got {response.status_code}: "
                                 f"{response.text[:200]}")
                return
            self.page = response.headers["location"]
            recent_clicks.extend(c.value for c in self.client.cookiejar
                                 if c.name == "_prclk" and c.value)

    @task(6)
    def browse(self) -> None:
        event_name = _weighted(BROWSING_EVENTS)
        referrer, self.page = self.page, f"{self.options.origin}/p/{random.randint(1, 500)}"
        custom: dict[str, Any] = {"content_ids": [self.page.rsplit("/", 1)[1]],
                                  "content_type": "product"}
        if event_name != "ViewContent":
            custom |= {"value": round(random.uniform(5, 200), 2), "currency": "EUR"}
        body = {"pixel_id": self.options.pixel, "event_name": event_name,
                "event_id": str(uuid.uuid4()), "event_source_url": self.page,
                "referrer_url": referrer, "custom_data": custom}
        with self.client.post("/v1/beacon", data=json.dumps(body),
                              headers={"User-Agent": self.user_agent, "Origin": self.options.origin,
                                       "Referer": self.page,
                                       "Content-Type": "text/plain;charset=UTF-8"},
                              catch_response=True) as response:
            if response.status_code != 204:
                response.failure(f"expected 204, got {response.status_code}: "
                                  f"{response.text[:200]}")


class ShopBackend(FastHttpUser):
    """The shop's server reporting conversions, with personal data for the collector to hash."""

    weight = 1
    wait_time = between(0.2, 2)

    @task
    def conversions(self) -> None:
        options = self.environment.parsed_options
        batch = [self._event(options.pixel) for _ in range(random.choice((1, 1, 1, 5, 20)))]
        body: Any = batch[0] if len(batch) == 1 else batch
        with self.client.post("/v1/events", json=body, name=f"/v1/events ({len(batch)})",
                              headers={"Authorization": f"Bearer {options.api_key}"},
                              catch_response=True) as response:
            if response.status_code != 202:
                response.failure(f"expected 202, got {response.status_code}: "
                                 f"{response.text[:200]}")
            elif response.json().get("accepted") != len(batch):
                response.failure(f"accepted {response.json().get('accepted')} of {len(batch)}")

    @staticmethod
    def _event(pixel: str) -> dict[str, Any]:
        n = random.randint(1, 10**6)
        event: dict[str, Any] = {
            "event_name": _weighted(SERVER_EVENTS),
            "event_time": int(time.time()) - random.randint(0, 300),
            "event_id": f"order-{uuid.uuid4().hex[:16]}",
            "pixel_id": pixel,
            "action_source": "website",
            "event_source_url": "https://shop.example/checkout/thanks",
            "user_data": {"em": f"customer{n}@example.com", "ph": f"+3361{n:07d}",
                          "external_id": f"user-{n}",
                          "client_ip_address": f"203.0.113.{n % 250 + 1}",
                          "client_user_agent": random.choice(BROWSER_AGENTS)},
            "custom_data": {"value": round(random.uniform(10, 500), 2), "currency": "EUR"},
        }
        if recent_clicks and random.random() < 0.7:
            event["click_id"] = random.choice(recent_clicks)
        return event

"""Mixed, realistic traffic for a running stack, a load shape, and a verdict when the run ends.

``make loadtest`` (``loadtest/run.py``) starts a private stack and runs this file; to aim it at
a stack of your own, name its collector, Redis and fake Graph API:

    .venv/bin/locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8000 \\
        --redis-url redis://127.0.0.1:6390/0 --fake-meta-url http://127.0.0.1:8090 \\
        --api-key demo-api-key --origin http://127.0.0.1:8000 --shape day --events 50000

(the defaults ``--pixel 1234567890 --slug demo --api-key test-api-key --origin
https://shop.example`` match ``tests.support.write_config``). The fake must keep every event id
(``FAKEMETA_MAX_EVENTS_KEPT`` above the run's events). One locust process only: the verdict
compares what this process was acknowledged with what the ledger and the fake hold.

Who is simulated:

* ``Visitor`` (most users): clicks an ad link (``GET /go/<slug>?fbclid=...&utm_...``, a 302
  that sets ``_fbc``/``_fbp``/``_prclk``; the redirect is not followed), then browses the shop,
  whose pages send beacons (``POST /v1/beacon``, ``text/plain`` like ``navigator.sendBeacon``,
  with the shop's ``Origin`` and the cookies from the click). Now and then they leave and a new
  visitor (no cookies) clicks.
* ``ShopBackend`` (few users): the shop's server posting Purchases, Leads and registrations to
  ``/v1/events`` with the Bearer API key, alone or a few at once, most naming the click id of a
  visitor seen earlier.

The shape (``--shape``, see ``loadtest/shapes.py``) sets a target rate of events per second;
``PlannedShape`` turns it into a number of users, each running ``--user-rate`` tasks per second.
Every answer is checked (302 with a Location, 204, 202 with the accepted count); anything else
is a locust failure. When the run ends, ``verdict`` decides: no failed request, the redirect p99
under ``--p99-bound-ms`` as a visitor beside locust saw it (``loadtest/probe.py``, a plain
process clicking every ``--probe-interval-ms``: locust's own times include its gevent loop's
scheduling on the same cores, reported too), and ``loadtest.reconcile`` (every acknowledged
event delivered exactly once or dead with a reason, waiting up to ``--deliver-within-s`` from
the start); locust exits 1 otherwise. ``--summary-json`` writes the figures for
``loadtest/report.py``.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locust import FastHttpUser, LoadTestShape, constant_throughput, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtest import probe, reconcile
from loadtest.shapes import Plan, RampPlan, make_plan, users_for

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
BATCH_SIZES = (1, 1, 1, 1, 2, 5)  # events per /v1/events request, equally likely
REDIRECT_NAME = "/go/[slug]"
LINK_EVENT = "PageView"  # what the link's redirect sends (its event_name)
EVENT_NAMES = (LINK_EVENT, *(name for name, _ in BROWSING_EVENTS + SERVER_EVENTS))
STOP_TIMEOUT_S = 30.0  # a user being stopped finishes its request first (locust --stop-timeout)
LEDGER_TTL_S = 7 * 86_400  # the relay's default ledger_ttl_days; only used to read the ledger

# Click ids that visitors received, for the backend's events to refer to (shared by all users).
recent_clicks: deque[str] = deque(maxlen=5000)


@dataclass
class Tally:
    """What this locust process was acknowledged: the other half of the reconciliation."""

    events: int = 0
    event_ids: set[str] = field(default_factory=set)
    start_ms: int = 0
    ramp_steps: list[dict[str, Any]] = field(default_factory=list)
    knee: dict[str, Any] | None = None  # ramp: the last healthy step
    knee_passed: bool = False  # ramp: a step failed requests or passed the p99 bound
    meta_baseline: reconcile.MetaBaseline | None = None
    probe: subprocess.Popen[bytes] | None = None  # loadtest/probe.py, the visitor beside locust
    probe_out: Path | None = None

    def acknowledged(self, count: int, event_ids: Iterable[str] = ()) -> None:
        self.events += count
        self.event_ids.update(event_ids)


TALLY = Tally()


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("pixelrelay")
    group.add_argument("--pixel", default="1234567890", help="pixel id the events go to")
    group.add_argument("--slug", default="demo", help="link slug clicked: /go/<slug>")
    group.add_argument("--events-per-click", type=int, default=1,
                       help="events one redirect stores (the link's pixels)")
    group.add_argument("--api-key", default="test-api-key", help="Bearer key for /v1/events")
    group.add_argument("--origin", default="https://shop.example",
                       help="shop origin the beacons come from (in collector.allowed_origins)")
    group.add_argument("--shape", default="day", choices=("day", "steady", "ramp", "spike"))
    group.add_argument("--events", type=int, default=50_000,
                       help="day: events to send; the run stops once they are acknowledged")
    group.add_argument("--duration-s", type=float, default=240,
                       help="day/steady: length of the run (the day is compressed into it)")
    group.add_argument("--overtime-s", type=float, default=None,
                       help="day: how long past --duration-s it may run to send every event "
                            "(default: a quarter of --duration-s)")
    group.add_argument("--rate", type=float, default=100,
                       help="steady: events/s; ramp: first step and step size; spike: base")
    group.add_argument("--step-s", type=float, default=15, help="ramp: length of a step")
    group.add_argument("--max-steps", type=int, default=40, help="ramp: steps at most")
    group.add_argument("--user-rate", type=float, default=2.0,
                       help="tasks per second of one simulated user")
    group.add_argument("--visitor-weight", type=int, default=10, help="share of Visitor users")
    group.add_argument("--shop-weight", type=int, default=1, help="share of ShopBackend users")
    group.add_argument("--p99-bound-ms", type=float, default=50.0,
                       help="the redirect p99 must stay under this (ramp: the knee's bound)")
    group.add_argument("--redis-url", default="", help="the stack's Redis, for the ledger")
    group.add_argument("--fake-meta-url", default="", help="the stack's fake Graph API")
    group.add_argument("--deliver-within-s", type=float, default=300,
                       help="every event must be delivered or dead this long after the start")
    group.add_argument("--no-reconcile", action="store_true",
                       help="judge only failures and p99 (no Redis or fake Meta to read)")
    group.add_argument("--summary-json", default="", help="write the verdict and figures here")
    group.add_argument("--probe-interval-ms", type=float, default=20.0,
                       help="a redirect this often from loadtest/probe.py, whose p99 the bound "
                            "judges (0: judge locust's own, which includes its scheduling)")


def _weighted(choices: tuple[tuple[str, int], ...]) -> str:
    names, weights = zip(*choices, strict=True)
    return random.choices(names, weights)[0]


def _fbclid() -> str:
    """Shaped like Meta's: IwAR + 59 URL-safe characters."""
    return "IwAR" + uuid.uuid4().hex + uuid.uuid4().hex[:27]


class Visitor(FastHttpUser):
    """A person who clicks an ad and then browses the shop."""

    weight = 10
    wait_time = constant_throughput(2.0)

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
        with self.client.get(f"/go/{self.options.slug}?{query}", name=REDIRECT_NAME,
                             headers={"User-Agent": self.user_agent,
                                      "Referer": "https://m.facebook.com/"},
                             allow_redirects=False, catch_response=True) as response:
            if response.status_code != 302 or not response.headers.get("location"):
                response.failure(f"expected a 302 with a Location, got {response.status_code}: "
                                 f"{response.text[:200]}")
                return
            TALLY.acknowledged(self.options.events_per_click)
            self.page = response.headers["location"]
            recent_clicks.extend(c.value for c in self.client.cookiejar
                                 if c.name == "_prclk" and c.value)

    @task(4)
    def browse(self) -> None:
        event_name = _weighted(BROWSING_EVENTS)
        referrer, self.page = self.page, f"{self.options.origin}/p/{random.randint(1, 500)}"
        custom: dict[str, Any] = {"content_ids": [self.page.rsplit("/", 1)[1]],
                                  "content_type": "product"}
        if event_name != "ViewContent":
            custom |= {"value": round(random.uniform(5, 200), 2), "currency": "EUR"}
        event_id = str(uuid.uuid4())
        body = {"pixel_id": self.options.pixel, "event_name": event_name,
                "event_id": event_id, "event_source_url": self.page,
                "referrer_url": referrer, "custom_data": custom}
        with self.client.post("/v1/beacon", data=json.dumps(body),
                              headers={"User-Agent": self.user_agent, "Origin": self.options.origin,
                                       "Referer": self.page,
                                       "Content-Type": "text/plain;charset=UTF-8"},
                              catch_response=True) as response:
            if response.status_code != 204:
                response.failure(f"expected 204, got {response.status_code}: "
                                 f"{response.text[:200]}")
                return
            TALLY.acknowledged(1, [event_id])

    @task(1)
    def leave(self) -> None:
        """The visitor goes; another one, without cookies, comes through an ad."""
        self.client.cookiejar.clear()
        self.user_agent = random.choice(BROWSER_AGENTS)
        self.click()


class ShopBackend(FastHttpUser):
    """The shop's server reporting conversions, with personal data for the collector to hash."""

    weight = 1
    wait_time = constant_throughput(2.0)

    @task
    def conversions(self) -> None:
        options: Any = self.environment.parsed_options
        batch = [self._event(options.pixel) for _ in range(random.choice(BATCH_SIZES))]
        body: Any = batch[0] if len(batch) == 1 else batch
        with self.client.post("/v1/events", json=body, name=f"/v1/events ({len(batch)})",
                              headers={"Authorization": f"Bearer {options.api_key}"},
                              catch_response=True) as response:
            if response.status_code != 202:
                response.failure(f"expected 202, got {response.status_code}: "
                                 f"{response.text[:200]}")
                return
            answer = response.json()
            if answer.get("accepted") != len(batch):
                response.failure(f"accepted {answer.get('accepted')} of {len(batch)}")
                return
            TALLY.acknowledged(len(batch), answer.get("event_ids", []))

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


def events_per_user_s(options: Any) -> float:
    """Mean events per second one user makes, from the user mix and the tasks' weights."""
    visitor_tasks = 1 + 4 + 1  # click, browse, leave (which clicks): one event each
    per_visitor = (options.events_per_click * 2 + 4) / visitor_tasks
    per_shop = sum(BATCH_SIZES) / len(BATCH_SIZES)
    total = options.visitor_weight + options.shop_weight
    return options.user_rate * (options.visitor_weight * per_visitor
                                + options.shop_weight * per_shop) / total


class PlannedShape(LoadTestShape):
    """The ``--shape`` plan's rate turned into users; stops when the plan ends, when ``day``'s
    events are acknowledged, or (``ramp``) at the knee."""

    plan: Plan | None = None
    _step = -1
    _step_start: dict[str, Any] = {}

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        options: Any = self.runner.environment.parsed_options
        if self.plan is None:
            self.plan = make_plan(options.shape, events=options.events,
                                  duration_s=options.duration_s, rate=options.rate,
                                  step_s=options.step_s, max_steps=options.max_steps,
                                  overtime_s=options.overtime_s)
        t = self.get_run_time()
        if options.shape == "day" and TALLY.events >= options.events:
            return None
        if isinstance(self.plan, RampPlan) and self._ramp_knee_passed(t, options):
            return None
        rate = self.plan.rate_at(t)
        if rate is None:
            return None
        users = users_for(rate, events_per_user_s(options))
        return users, max(50.0, float(users))

    def _ramp_knee_passed(self, t: float, options: Any) -> bool:
        """At each step's end, record its figures; True once a step failed or was too slow."""
        assert isinstance(self.plan, RampPlan) and self.runner is not None
        step = self.plan.step_of(t)
        if step == self._step:
            return False
        stats = self.runner.environment.stats
        total, redirect = stats.total, stats.get(REDIRECT_NAME, "GET")
        now = {"requests": total.num_requests, "failures": total.num_failures,
               "events": TALLY.events, "t": t}
        if self._step >= 0:
            before = self._step_start
            seconds = now["t"] - before["t"]
            p99 = redirect.get_current_response_time_percentile(0.99) or 0
            record = {"target_events_s": self.plan.rate * (self._step + 1),
                      "events_s": round((now["events"] - before["events"]) / seconds, 1),
                      "requests_s": round((now["requests"] - before["requests"]) / seconds, 1),
                      "failures": now["failures"] - before["failures"],
                      "redirect_p99_ms": p99}
            TALLY.ramp_steps.append(record)
            if record["failures"] or p99 > options.p99_bound_ms:
                TALLY.knee_passed = True
                return True
            TALLY.knee = record
        self._step, self._step_start = step, now
        return False


@events.test_start.add_listener
def _started(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, (MasterRunner, WorkerRunner)):
        raise SystemExit("loadtest/locustfile.py reconciles what one process was acknowledged: "
                         "run it without --master/--worker/--processes")
    options: Any = environment.parsed_options
    if not options.no_reconcile and not (options.redis_url and options.fake_meta_url):
        raise SystemExit("give --redis-url and --fake-meta-url (the stack's Redis and fake "
                         "Graph API) to reconcile, or --no-reconcile")
    for user_class in (Visitor, ShopBackend):
        user_class.wait_time = constant_throughput(options.user_rate)
    Visitor.weight, ShopBackend.weight = options.visitor_weight, options.shop_weight
    if not environment.stop_timeout:
        # Users stopped mid-request would leave events stored but never acknowledged to us.
        environment.stop_timeout = STOP_TIMEOUT_S
    TALLY.start_ms = int(time.time() * 1000)
    if options.probe_interval_ms > 0 and environment.host:
        TALLY.probe_out = Path(tempfile.mkdtemp(prefix="pixelrelay-probe-")) / "probe.json"
        url = (f"{environment.host.rstrip('/')}/go/{options.slug}?fbclid=IwAR{uuid.uuid4().hex}"
               "&utm_source=facebook&utm_medium=paid_social")
        TALLY.probe = subprocess.Popen([sys.executable, probe.__file__, url, "--interval-ms",
                                        str(options.probe_interval_ms), "--out",
                                        str(TALLY.probe_out)])
    if not options.no_reconcile:
        TALLY.meta_baseline = reconcile.meta_snapshot(options.fake_meta_url, [options.pixel])


@events.quitting.add_listener
def _quitting(environment: Environment, **_: Any) -> None:
    environment.process_exit_code = verdict(environment)


def verdict(environment: Environment) -> int:
    """0 when the run passed, 1 otherwise; prints why, writes ``--summary-json``."""
    import redis

    options: Any = environment.parsed_options
    stats = environment.stats
    if TALLY.probe is not None:  # first: its last click must fall inside the run's window
        TALLY.probe.send_signal(signal.SIGTERM)
        TALLY.probe.wait(30)
    end_ms = int(time.time() * 1000)
    locust_p99 = stats.get(REDIRECT_NAME, "GET").get_response_time_percentile(0.99) or 0
    redirect_p99, probe_clicks, probe_failed = locust_p99, 0, 0
    if TALLY.probe is not None and TALLY.probe_out is not None:
        seen = json.loads(TALLY.probe_out.read_text())
        probe_clicks, probe_failed = len(seen["latencies_ms"]), seen["failed"]
        redirect_p99 = round(probe.percentile(seen["latencies_ms"], 0.99), 1)
        # Its answered clicks were acknowledged too: they join the reconciliation.
        TALLY.acknowledged(probe_clicks * options.events_per_click)
    problems = []
    if stats.total.num_failures:
        problems.append(f"{stats.total.num_failures:,} requests failed")
    if probe_failed:
        problems.append(f"{probe_failed:,} of the probe's redirects got no 302")
    if options.shape != "ramp" and redirect_p99 > options.p99_bound_ms:
        problems.append(f"redirect p99 {redirect_p99} ms is above {options.p99_bound_ms:g} ms")
    if options.shape == "day" and TALLY.events < options.events:
        problems.append(f"only {TALLY.events:,} of {options.events:,} events were acknowledged")
    summary: dict[str, Any] = {
        "shape": options.shape, "start_ms": TALLY.start_ms, "end_ms": end_ms,
        "acknowledged": TALLY.events, "requests": stats.total.num_requests,
        "failures": stats.total.num_failures, "redirect_p99_ms": redirect_p99,
        "locust_redirect_p99_ms": locust_p99, "probe_clicks": probe_clicks,
        "p99_bound_ms": options.p99_bound_ms, "ramp_steps": TALLY.ramp_steps,
        "knee": TALLY.knee, "knee_passed": TALLY.knee_passed,
    }
    if not options.no_reconcile and TALLY.meta_baseline is not None:
        client = redis.Redis.from_url(options.redis_url, socket_timeout=60)
        deadline = time.monotonic() + max(
            0.0, TALLY.start_ms / 1000 + options.deliver_within_s - time.time())
        reconcile.wait_settled(client, LEDGER_TTL_S, TALLY.start_ms, end_ms, deadline)
        settled_ms = int(time.time() * 1000)
        seen = reconcile.observe(client, LEDGER_TTL_S, options.fake_meta_url, [options.pixel],
                                 TALLY.start_ms, end_ms, TALLY.meta_baseline)
        result = reconcile.judge(reconcile.Acknowledged(TALLY.events,
                                                        frozenset(TALLY.event_ids)), seen)
        problems += result.problems
        delivered_ms = reconcile.arrival_times(options.fake_meta_url, options.pixel,
                                               EVENT_NAMES, TALLY.start_ms)
        summary |= {"reconciliation": result.as_dict(), "settled_ms": settled_ms,
                    "delivered_ms": delivered_ms,
                    "last_delivery_s": (delivered_ms[-1] - TALLY.start_ms) / 1000
                    if delivered_ms else None}
    summary |= {"passed": not problems, "problems": problems}
    if options.summary_json:
        Path(options.summary_json).write_text(json.dumps(summary))
    if problems:
        print("loadtest FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    line = f"loadtest passed: {TALLY.events:,} events acknowledged, redirect p99 {redirect_p99} ms"
    if "reconciliation" in summary:
        r = summary["reconciliation"]
        line += (f"; {r['delivered']:,} delivered exactly once, {r['dead']:,} dead with a "
                 f"reason, the last {summary['last_delivery_s']:.1f} s after the start")
    print(line, file=sys.stderr)
    return 0

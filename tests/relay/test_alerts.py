"""relay.alerts and relay.notify: built-in alerts to a local fake Telegram Bot API and a local
webhook receiver (real HTTP servers on loopback), with start/end messages, the cooldown, the
election through Redis, and an endpoint that is down or hangs."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import fakeredis
import msgspec
import pytest

from relay import keys
from relay.alerts import Alerts, Finding, collector_spooling, findings
from relay.config import Settings, settings_from_mapping
from relay.errors import ConfigError
from relay.notify import SIGNATURE_HEADER
from relay.observe import relay_state
from relay.outbox import Outbox
from relay.queues import QUEUE_NAMES
from relay.status import WorkerPresence
from relay.worker import RelayWorker
from tests.relay.factories import PIXEL, TOKEN, TOKEN_ENV
from tests.support import free_port

BOT_TOKEN = "123456:bot-secret-token"
HOOK_SECRET = "webhook-hmac-key"
DASHBOARD = "https://relay.example/dashboard/"


@dataclass
class Receiver:
    """A local HTTP endpoint recording POSTs; ``status`` is what it answers, ``hold`` (when
    set) keeps every request waiting until it is released."""

    port: int = field(default_factory=free_port)
    status: int = 200
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    hold: threading.Event | None = None
    arrived: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.arrived.set()
                if receiver.hold is not None:
                    receiver.hold.wait(30)
                receiver.requests.append((self.path, dict(self.headers), body))
                answer = json.dumps({"ok": receiver.status == 200}).encode()
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, _, body in self.requests]


@pytest.fixture
def telegram() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def webhook() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


def settings_for(*alerts: dict[str, Any], alerting: dict[str, Any] | None = None) -> Settings:
    raw: dict[str, Any] = {
        "meta": {"graph_url": "https://graph.test"},
        "pixels": [{"id": PIXEL, "access_token_env": TOKEN_ENV}],
        "alerting": {"dashboard_url": DASHBOARD, **(alerting or {})},
        "alerts": list(alerts),
    }
    env = {TOKEN_ENV: TOKEN, "TG_TOKEN": BOT_TOKEN, "HOOK_SECRET": HOOK_SECRET}
    return settings_from_mapping(raw, env)


def telegram_alert(receiver: Receiver, **more: Any) -> dict[str, Any]:
    return {"kind": "telegram", "chat_id": "-100200300", "bot_token_env": "TG_TOKEN",
            "telegram_api_url": receiver.url, **more}


def webhook_alert(receiver: Receiver) -> dict[str, Any]:
    return {"kind": "webhook", "url": f"{receiver.url}/hooks/pixelrelay",
            "secret_env": "HOOK_SECRET"}


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def token_invalid() -> Finding:
    return Finding("token_invalid", (("pixel", PIXEL),), {"code": 190}, "Meta answered 190")


def engine(settings: Settings, redis: fakeredis.FakeRedis, clock: Clock,
           outbox: Outbox | None = None) -> tuple[Alerts, Outbox]:
    outbox = outbox or Outbox(redis, settings, clock=clock)
    return Alerts(settings, redis, outbox, clock=clock), outbox


# -- start, end, cooldown -------------------------------------------------------------------------
def test_a_condition_sends_one_message_when_it_starts_and_one_when_it_ends(
        redis: fakeredis.FakeRedis, telegram: Receiver) -> None:
    clock = Clock()
    settings = settings_for(telegram_alert(telegram), alerting={"cooldown_s": 60})
    alerts, outbox = engine(settings, redis, clock)

    # Given a token that stays invalid for three rounds, then is fixed
    for _ in range(3):
        alerts.evaluate([token_invalid()])
        clock.now += 30
    clock.now += 60
    alerts.evaluate([])
    alerts.evaluate([])
    while outbox.pending():
        outbox.send_due()

    # Then the bot wrote twice: the start and the end
    texts = [b["text"] for b in telegram.bodies()]
    assert 2 == len(texts)
    assert texts[0].startswith("pixelrelay ALERT: access token invalid (Meta code 190) "
                               f"(pixel {PIXEL})")
    assert texts[1].startswith("pixelrelay RESOLVED: access token invalid")
    assert all(DASHBOARD in t for t in texts)


def test_a_flapping_condition_sends_nothing_more_within_the_cooldown(
        redis: fakeredis.FakeRedis, telegram: Receiver) -> None:
    clock = Clock()
    alerts, _ = engine(settings_for(telegram_alert(telegram), alerting={"cooldown_s": 300}),
                       redis, clock)

    sent = []
    for round_ in range(10):  # on, off, on, off... every 20 s
        sent += alerts.evaluate([token_invalid()] if round_ % 2 == 0 else [])
        clock.now += 20
    clock.now += 300
    sent += alerts.evaluate([])  # settled: it has ended

    assert [True, False] == [n.firing for n in sent]


def test_throttling_is_announced_only_once_it_lasted_throttled_for_s(
        redis: fakeredis.FakeRedis, telegram: Receiver) -> None:
    clock = Clock()
    alerts, _ = engine(settings_for(telegram_alert(telegram),
                                    alerting={"throttled_for_s": 600}), redis, clock)
    throttled = Finding("throttled", (("pixel", PIXEL),), {"rate_factor": 0.5}, "at 50 %")

    early = alerts.evaluate([throttled])
    clock.now += 599
    still_early = alerts.evaluate([throttled])
    clock.now += 2
    due = alerts.evaluate([throttled])

    assert ([], [], ["throttled"]) == (early, still_early, [n.condition for n in due])


def test_a_queue_without_a_worker_is_announced_only_after_a_heartbeat_timeout(
        redis: fakeredis.FakeRedis, telegram: Receiver) -> None:
    clock = Clock()
    settings = settings_for(telegram_alert(telegram))
    alerts, _ = engine(settings, redis, clock)
    nobody = Finding("no_live_worker", (("queue", "relay_low"),), {"live_workers": 0}, "none")

    at_start = alerts.evaluate([nobody])  # e.g. the worker restarting, or not beating yet
    clock.now += settings.relay.heartbeat_timeout_ms / 1000
    later = alerts.evaluate([nobody])

    assert ([], ["no_live_worker"]) == (at_start, [n.condition for n in later])


def test_a_newly_elected_observer_neither_repeats_a_start_nor_forgets_the_end(
        redis: fakeredis.FakeRedis, telegram: Receiver) -> None:
    clock = Clock()
    settings = settings_for(telegram_alert(telegram), alerting={"cooldown_s": 0})
    first, _ = engine(settings, redis, clock)
    second, _ = engine(settings, redis, clock)

    started = first.evaluate([token_invalid()])
    clock.now += 5
    again = second.evaluate([token_invalid()])  # the other worker is elected now
    ended = second.evaluate([])

    assert ([True], [], [False]) == ([n.firing for n in started], again,
                                     [n.firing for n in ended])


# -- the endpoints --------------------------------------------------------------------------------
def test_telegram_gets_send_message_with_the_chat_and_a_text_without_secrets(
        redis: fakeredis.FakeRedis, telegram: Receiver) -> None:
    settings = settings_for(telegram_alert(telegram))
    alerts, outbox = engine(settings, redis, Clock())

    alerts.evaluate([token_invalid()])
    outbox.send_due()

    path, _, body = telegram.requests[0]
    sent = json.loads(body)
    assert (f"/bot{BOT_TOKEN}/sendMessage", "-100200300") == (path, sent["chat_id"])
    assert BOT_TOKEN not in sent["text"] and TOKEN not in sent["text"]
    assert PIXEL in sent["text"] and "190" in sent["text"]


def test_webhook_gets_json_signed_with_hmac_sha256(redis: fakeredis.FakeRedis,
                                                   webhook: Receiver) -> None:
    settings = settings_for(webhook_alert(webhook))
    alerts, outbox = engine(settings, redis, Clock())

    alerts.evaluate([token_invalid()])
    outbox.send_due()

    path, headers, body = webhook.requests[0]
    expected = "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert ("/hooks/pixelrelay", True) == (
        path, hmac.compare_digest(expected, headers[SIGNATURE_HEADER]))
    sent = json.loads(body)
    assert ("token_invalid", "firing", {"pixel": PIXEL}, {"code": 190}, DASHBOARD) == (
        sent["condition"], sent["status"], sent["subject"], sent["values"],
        sent["dashboard_url"])
    assert HOOK_SECRET not in body.decode()


def test_an_endpoint_that_is_down_gets_the_message_once_it_is_back(
        redis: fakeredis.FakeRedis) -> None:
    # Given a Telegram endpoint that is not listening
    down = Receiver()
    clock = Clock()
    settings = settings_for(telegram_alert(down), alerting={"retry_max_s": 30})
    alerts, outbox = engine(settings, redis, clock)
    alerts.evaluate([token_invalid()])

    # When the outbox tries, fails, and tries again after its pause once the endpoint is up
    first_wait = outbox.send_due()
    down.start()
    try:
        not_yet = outbox.send_due()  # still pausing: nothing sent
        clock.now += first_wait
        outbox.send_due()
    finally:
        down.stop()

    # Then the message arrived exactly once, and nothing is pending
    assert (1.0, 1, 0) == (first_wait, len(down.requests), outbox.pending())
    assert 0 < not_yet <= first_wait


def test_an_endpoint_answering_errors_is_retried_with_growing_pauses(
        redis: fakeredis.FakeRedis, webhook: Receiver) -> None:
    clock = Clock()
    alerts, outbox = engine(settings_for(webhook_alert(webhook), alerting={"retry_max_s": 4}),
                            redis, clock)
    alerts.evaluate([token_invalid()])
    webhook.status = 503

    pauses = []
    for _ in range(4):
        pauses.append(outbox.send_due())
        clock.now += pauses[-1]
    webhook.status = 200
    outbox.send_due()

    assert ([1.0, 2.0, 4.0, 4.0], 5, 0) == (pauses, len(webhook.requests), outbox.pending())


def test_a_hanging_endpoint_never_blocks_whoever_raises_an_alert(
        redis: fakeredis.FakeRedis, telegram: Receiver) -> None:
    # Given the outbox thread stuck in a request the endpoint does not answer
    telegram.hold = threading.Event()
    settings = settings_for(telegram_alert(telegram))
    alerts, outbox = engine(settings, redis, Clock(), Outbox(redis, settings))
    outbox.start()
    try:
        alerts.evaluate([token_invalid()])
        assert telegram.arrived.wait(10)

        # When more conditions start, they are queued at once (evaluate does not wait)
        more = alerts.evaluate([token_invalid(), Finding(
            "oldest_waiting", (("queue", "relay_high"),), {"oldest_waiting_s": 400}, "old")])

        # Then they wait in the outbox, and go out once the endpoint answers
        assert (["oldest_waiting"], 1) == ([n.condition for n in more], outbox.pending() - 1)
    finally:
        telegram.hold.set()
        outbox.stop()
    assert 2 == len(telegram.requests)


def test_an_endpoint_gets_only_the_conditions_it_asked_for(
        redis: fakeredis.FakeRedis, telegram: Receiver, webhook: Receiver) -> None:
    settings = settings_for(telegram_alert(telegram, conditions=["no_live_worker"]),
                            webhook_alert(webhook))
    alerts, outbox = engine(settings, redis, Clock())

    alerts.evaluate([token_invalid()])
    outbox.send_due()

    assert (0, 1) == (len(telegram.requests), len(webhook.requests))


# -- what the conditions read ---------------------------------------------------------------------
def test_findings_name_each_condition_the_relay_state_shows(redis: fakeredis.FakeRedis) -> None:
    settings = settings_for()
    now_ms = 1_800_000_000_000
    redis.set(keys.pixel_health(PIXEL), msgspec.json.encode(
        {"ok": False, "error": {"code": 190, "message": "Invalid OAuth access token"}}))
    WorkerPresence(redis, "w1", [QUEUE_NAMES["high"], QUEUE_NAMES["normal"]], 8).beat(now_ms)
    counts = Counter({f"delivered:{PIXEL}:Purchase": 90, f"dead:{PIXEL}:Purchase": 10})

    found = findings(settings, relay_state(redis, settings, now_ms), counts, 1.0)

    assert {("delivery_success_low", (("pixel", PIXEL),)),
            ("dead_letters_growing", (("pixel", PIXEL),)),
            ("token_invalid", (("pixel", PIXEL),)),
            ("no_live_worker", (("queue", "relay_low"),)),
            ("collector_spooling", (("collector", "spool"),))} == {
        (f.condition, f.subject) for f in found}
    success = next(f for f in found if f.condition == "delivery_success_low")
    assert {"success_percent": 90.0, "delivered": 90, "dead": 10, "window_min": 15} == (
        success.values)


def test_a_paused_pixel_is_a_finding_with_its_reason(redis: fakeredis.FakeRedis) -> None:
    settings = settings_for()
    now_ms = 1_800_000_000_000
    redis.hset(keys.breaker(PIXEL), mapping={"state": "open", "reason": "meta",
                                             "since_ms": now_ms - 600_000})

    found = findings(settings, relay_state(redis, settings, now_ms), Counter(), None)

    paused = next(f for f in found if f.condition == "pixel_paused")
    assert ({"reason": "meta", "paused_s": 600, "code": None, "waiting_events": 0},
            "10 min, 0 events waiting") == (
        paused.values, paused.detail.split(" for ")[1].split(";")[0])


def test_a_permission_pause_tells_the_operator_what_to_grant(
        redis: fakeredis.FakeRedis) -> None:
    settings = settings_for()
    now_ms = 1_800_000_000_000
    redis.hset(keys.breaker(PIXEL), mapping={"state": "open", "reason": "permission",
                                             "since_ms": now_ms - 60_000, "code": 200})

    found = findings(settings, relay_state(redis, settings, now_ms), Counter(), None)

    paused = next(f for f in found if f.condition == "pixel_paused")
    assert ("permission", 200) == (paused.values["reason"], paused.values["code"])
    assert "lacks a permission for this pixel" in paused.detail


def test_collector_spooling_is_read_from_its_metrics(webhook: Receiver) -> None:
    import httpx

    from collector.metrics import CollectorMetrics

    metrics = CollectorMetrics()
    metrics.spool_state(True, 2048)
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=metrics.render()))
    with httpx.Client(transport=transport) as client:
        assert 1.0 == collector_spooling(client, "http://collector.test/metrics")
    with httpx.Client() as client:  # nothing listens there: unknown, not an alert
        assert collector_spooling(client, f"http://127.0.0.1:{free_port()}/metrics") is None


def test_the_elected_worker_sends_an_alert_and_the_other_does_not(
        redis: fakeredis.FakeRedis, telegram: Receiver) -> None:
    # Given two workers on one Redis, a pixel whose token Meta refused
    settings = settings_for(telegram_alert(telegram), alerting={
        "collector_metrics_url": f"http://127.0.0.1:{free_port()}/metrics"})
    redis.set(keys.pixel_health(PIXEL), msgspec.json.encode(
        {"ok": False, "error": {"code": 190, "message": "Invalid OAuth access token"}}))
    workers = [RelayWorker(settings, ["high", "normal", "low"], redis, metrics_port=0)
               for _ in range(2)]
    try:
        # When both observe
        elected = [w.observe_once() for w in workers]
        for worker in workers:
            while worker.outbox.pending():
                worker.outbox.send_due()
    finally:
        for worker in workers:
            worker.outbox.stop(0)

    # Then one of them is the observer and the bot got one message about the token
    texts = [b["text"] for b in telegram.bodies()]
    assert ([True, False], 1) == (elected, sum("access token invalid" in t for t in texts))


# -- configuration --------------------------------------------------------------------------------
def test_an_alert_whose_secret_is_not_in_the_environment_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"alerts\[0\].bot_token_env"):
        settings_from_mapping({"alerts": [{"kind": "telegram", "chat_id": "1",
                                           "bot_token_env": "UNSET_TOKEN"}]}, {})


def test_a_token_in_the_file_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"alerts\[0\].bot_token must not be in the file"):
        settings_from_mapping({"alerts": [{"kind": "telegram", "bot_token": "x"}]}, {})


def test_an_unknown_condition_is_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError, match="conditions names 'tokn_invalid'"):
        settings_from_mapping({"alerts": [{"kind": "webhook", "url": "https://h.example/x",
                                           "secret_env": "S", "conditions": ["tokn_invalid"]}]},
                              {"S": "k"})


def test_the_secrets_stay_out_of_the_settings_repr() -> None:
    settings = settings_for({"kind": "telegram", "chat_id": "1", "bot_token_env": "TG_TOKEN"})

    assert BOT_TOKEN not in repr(settings)

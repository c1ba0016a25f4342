"""Built-in alerts from real relay worker processes: a queue with no live worker is announced to a
local fake Telegram Bot API, once, and its end once a worker for it starts; a message waiting
for a webhook that is down outlives the elected worker's kill -9 and arrives once, signed."""

from __future__ import annotations

import hmac
import json
from pathlib import Path

import pytest

from relay import keys
from relay.config import load_settings
from relay.notify import SIGNATURE_HEADER, endpoint_key, signature
from tests.e2e.conftest import StartFn
from tests.relay.test_alerts import BOT_TOKEN, HOOK_SECRET, Receiver
from tests.support import DEMO_TOKEN, RedisServer, wait_for, write_config


def test_a_queue_without_a_worker_is_announced_and_its_end_too(
        tmp_path: Path, redis_server: RedisServer, fake_meta: str,
        start_process: StartFn) -> None:
    # Given a fake Telegram and a relay whose only worker serves the high queue
    telegram = Receiver().start()
    try:
        config = write_config(tmp_path, redis_url=redis_server.url, graph_url=fake_meta, extra=f"""
[alerting]
cooldown_s = 0
dashboard_url = "https://relay.example/dash/"

[[alerts]]
kind = "telegram"
chat_id = "42"
bot_token_env = "PIXELRELAY_TEST_BOT"
telegram_api_url = "{telegram.url}"
""")
        config.write_text(config.read_text().replace(
            "heartbeat_timeout_ms = 3000",
            "heartbeat_timeout_ms = 3000\nobserve_interval_ms = 300"))
        env = {"REDIS_URL": redis_server.url, "PIXELRELAY_GRAPH_URL": fake_meta,
               "PIXELRELAY_TEST_BOT": BOT_TOKEN}
        start_process("relay-high", "pixelrelay", "relay", "--config", str(config),
                      "--queues", "high", "--metrics-port", "0", env=env)

        # Then the bot is told the normal and the low queue have no live worker
        def texts() -> list[str]:
            return [b["text"] for b in telegram.bodies()]

        wait_for(lambda: sum("no live relay worker" in t for t in texts()) == 2, 30,
                 what="two no-live-worker alerts")
        assert any("ALERT: no live relay worker (queue relay_normal)" in t for t in texts())

        # When a worker for normal and low starts
        start_process("relay-rest", "pixelrelay", "relay", "--config", str(config),
                      "--queues", "normal,low", "--metrics-port", "0", env=env)

        # Then both ends are announced, and nothing was said twice
        wait_for(lambda: sum(t.startswith("pixelrelay RESOLVED: no live relay worker")
                             for t in texts()) == 2, 30, what="two resolved messages")
        starts = [t for t in texts() if t.startswith("pixelrelay ALERT: no live relay worker")]
        assert 2 == len(starts)
        assert all(BOT_TOKEN not in t and "https://relay.example/dash/" in t for t in texts())
        assert {f"/bot{BOT_TOKEN}/sendMessage"} == {path for path, _, _ in telegram.requests}
    finally:
        telegram.stop()


@pytest.mark.slow
@pytest.mark.integration
def test_a_message_outlives_the_elected_worker_killed_while_the_webhook_is_down(
        tmp_path: Path, redis_server: RedisServer, fake_meta: str,
        start_process: StartFn) -> None:
    # Given a webhook that is down and a relay whose workers all serve only the high queue
    webhook = Receiver()  # its port is chosen; nothing listens there yet
    config = write_config(tmp_path, redis_url=redis_server.url, graph_url=fake_meta, extra=f"""
[alerting]
cooldown_s = 0
retry_max_s = 1
dashboard_url = "https://relay.example/dash/"

[[alerts]]
kind = "webhook"
url = "{webhook.url}/hooks/pixelrelay"
secret_env = "PIXELRELAY_TEST_HOOK"
timeout_ms = 1000
""")
    config.write_text(config.read_text().replace(
        "heartbeat_timeout_ms = 3000",
        "heartbeat_timeout_ms = 3000\nobserve_interval_ms = 300"))
    env = {"REDIS_URL": redis_server.url, "PIXELRELAY_GRAPH_URL": fake_meta,
           "PIXELRELAY_TEST_HOOK": HOOK_SECRET}
    settings = load_settings(config, {**env, "PIXELRELAY_TEST_TOKEN": DEMO_TOKEN})
    outbox = keys.alert_outbox(endpoint_key(settings.alerts[0]))
    client = redis_server.client()

    # When the elected worker has stored the two no-live-worker alerts and failed to send them
    elected = start_process("relay-a", "pixelrelay", "relay", "--config", str(config),
                            "--queues", "high", "--metrics-port", "0", env=env)
    wait_for(lambda: client.llen(outbox) == 2 and '"alert_send_failed"' in elected.output(),
             30, what="two alerts waiting in the outbox after a failed send")
    other = start_process("relay-b", "pixelrelay", "relay", "--config", str(config),
                          "--queues", "high", "--metrics-port", "0", env=env)
    wait_for(lambda: '"relay_worker_started"' in other.output(), 30, what="the second worker")
    elected.kill()  # kill -9: its memory is gone
    webhook.start()
    try:
        # Then the other worker, elected in its place, sends both, signed
        wait_for(lambda: len(webhook.requests) >= 2, 30, what="the alerts at the webhook")

        # And once workers for the other queues start, both ends follow, nothing twice
        start_process("relay-c", "pixelrelay", "relay", "--config", str(config),
                      "--queues", "normal,low", "--metrics-port", "0", env=env)
        wait_for(lambda: len(webhook.requests) >= 4, 30, what="the resolved messages")
        bodies = []
        for path, headers, body in webhook.requests:
            assert "/hooks/pixelrelay" == path
            assert hmac.compare_digest(signature(HOOK_SECRET, body), headers[SIGNATURE_HEADER])
            bodies.append(json.loads(body))
    finally:
        webhook.stop()
    assert [("firing", "relay_low"), ("firing", "relay_normal")] == sorted(
        (b["status"], b["subject"]["queue"]) for b in bodies[:2])
    assert [("resolved", "relay_low"), ("resolved", "relay_normal")] == sorted(
        (b["status"], b["subject"]["queue"]) for b in bodies[2:])
    assert 4 == len(webhook.requests) == len({b["id"] for b in bodies})
    # A message leaves the outbox once its sender has read the webhook's answer, a moment after
    # the webhook recorded the request
    wait_for(lambda: client.llen(outbox) == 0 and '"alert_sent"' in other.output(), 10,
             what="the outbox empty once the webhook took every message")
    assert '"alert_sent"' not in elected.output()

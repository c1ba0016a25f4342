"""Built-in alerts from real relay worker processes: a queue with no live worker is announced to a
local fake Telegram Bot API, once, and its end once a worker for it starts."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import StartFn
from tests.relay.test_alerts import BOT_TOKEN, Receiver
from tests.support import RedisServer, wait_for, write_config


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

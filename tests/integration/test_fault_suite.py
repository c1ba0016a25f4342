"""The fault suite: real relay workers, a real Redis (AOF everysec) and the fake Graph API,
attacked under load the way production fails, each fault followed by a reconciliation of
every acknowledged event: delivered once, or dead with a reason; the number sent twice is
counted, the number lost must be 0 (or, for a kill -9 of Redis, within the AOF's one second).

Durations are scaled down to fit ``make test``: Redis stays down
``PIXELRELAY_FAULT_REDIS_OUTAGE_S`` (default 5 s) and the fake Meta
``PIXELRELAY_FAULT_META_OUTAGE_S`` (default 10 s: half of it 5xx, then half timeouts). The
issue's lengths (60 s and 5 minutes) are ``make test-reliability-full``, which sets them.
Single faults are also tested one by one in test_crash.py and test_failures.py; this file
reuses their fixtures. test_stack_faults.py adds the faults that need the collector in front.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from relay import _dramatiq, keys
from relay.breaker import pause_status
from relay.events import Envelope
from relay.queues import QUEUE_NAMES
from tests.integration.conftest import CleanProcess, FakeMeta, RelayStack, make_envelope
from tests.reliability.table import Row, record
from tests.support import DEMO_PIXEL, DEMO_TOKEN, VENV_BIN, RedisServer, wait_for

pytestmark = pytest.mark.slow
REDIS_OUTAGE_S = float(os.environ.get("PIXELRELAY_FAULT_REDIS_OUTAGE_S", "5"))
META_OUTAGE_S = float(os.environ.get("PIXELRELAY_FAULT_META_OUTAGE_S", "10"))
SETTLE_S = 60 + 3 * max(REDIS_OUTAGE_S, META_OUTAGE_S)


def reconcile(stack: RelayStack, envelopes: Sequence[Envelope], what: str, started: float,
              cases: int = 1) -> Row:
    """Wait until nothing is left to do, then account for every event; record the row."""
    wait_for(lambda: drained(stack.redis), SETTLE_S, interval_s=0.2,
             what=f"{what}: queues to drain")
    states = stack.states(envelopes)
    ids = stack.meta.event_ids()
    wanted = {e.event.event_id for e in envelopes}
    delivered = len(wanted & ids.keys())
    dead = states["dead"]
    row = Row(what, cases, sent=len(envelopes), delivered=delivered, dead=dead,
              twice=sum(1 for i in wanted if ids[i] > 1),
              lost=len(wanted) - delivered - dead, recover_s=time.monotonic() - started)
    record(row)
    return row


def drained(redis: RedisServer) -> bool:
    """Nothing left for the relay: every inbox, queue, delay queue and ack set empty."""
    client = redis.client(socket_timeout=10)
    try:
        for queue in QUEUE_NAMES.values():
            if client.scard(f"pixelrelay:inbox:{queue}") or any(
                    client.scard(k) for k in client.scan_iter(_dramatiq.acks_pattern(queue))):
                return False
            for name in (queue, _dramatiq.delay_queue(queue)):
                if client.hlen(_dramatiq.messages(name)):
                    return False
        return True
    except OSError:
        return False  # Redis not back yet
    finally:
        client.close()


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 120 else f"{seconds:g} s"


def pageviews(count: int) -> list[Envelope]:
    return [make_envelope("PageView") for _ in range(count)]


# -- processes ------------------------------------------------------------------------------------
def test_kill_9_of_a_relay_worker_mid_batch(
        fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]) -> None:
    # Given a worker busy with batches Meta answers slowly
    stack = relay_stack(fake_meta(FAKEMETA_LATENCY_MS="400"))
    events = pageviews(2_000)  # two batches of 1,000, both in flight at the kill
    stack.inject(events)
    doomed = stack.worker("low")
    wait_for(lambda: stack.unacked("relay_low") >= 2, 15, what="batches in flight")

    # When it is killed -9 and started again, as systemd would
    doomed.signal(signal.SIGKILL)
    killed = time.monotonic()
    stack.worker("low")

    # Then every event is delivered; those in flight at the kill may arrive twice
    row = reconcile(stack, events, "kill -9 of a relay worker mid-batch", killed)
    assert (2_000, 0, 0) == (row.delivered, row.dead, row.lost)


def test_sigterm_of_a_relay_worker_under_load_drains_it(
        fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]) -> None:
    stack = relay_stack(fake_meta(FAKEMETA_LATENCY_MS="400"))
    events = pageviews(2_000)
    stack.inject(events)
    stopping = stack.worker("low")
    wait_for(lambda: stack.unacked("relay_low") >= 2, 15, what="batches in flight")

    stopped = time.monotonic()
    code = stopping.stop(timeout_s=60)
    stack.worker("low")

    row = reconcile(stack, events, "SIGTERM of a relay worker under load", stopped)
    assert 0 == code, stopping.output()[-2000:]
    assert (2_000, 0, 0, 0) == (row.delivered, row.dead, row.lost, row.twice)


# -- Redis ----------------------------------------------------------------------------------------
class Injector(threading.Thread):
    """Stores events in small groups until Redis fails; keeps the acknowledged ones."""

    def __init__(self, stack: RelayStack, group: int = 100) -> None:
        super().__init__(daemon=True)
        self.stack, self.group = stack, group
        self.acked: list[tuple[float, Envelope]] = []
        self.stop_requested = threading.Event()

    def run(self) -> None:
        while not self.stop_requested.is_set():
            batch = [make_envelope("Lead") for _ in range(self.group)]
            try:
                self.stack.inject(batch)
            except Exception:  # noqa: BLE001 - Redis went away: not acknowledged, stop
                return
            now = time.monotonic()
            self.acked.extend((now, e) for e in batch)
            time.sleep(0.01)  # a steady stream, not a flood the relay cannot follow


def test_redis_killed_9_and_restarted_from_its_aof_under_load(
        fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]) -> None:
    # Given events stored continuously while a worker delivers them
    stack = relay_stack(fake_meta())
    stack.worker("high,normal,low")
    injector = Injector(stack)
    injector.start()
    wait_for(lambda: len(injector.acked) >= 3_000, 30, what="3,000 events stored")

    # When Redis is killed -9 mid-stream and restarted from its AOF
    stack.redis.kill()
    killed = time.monotonic()
    injector.join(10)
    stack.redis.start()

    # Then every acknowledged event is delivered, except at most those of the last second
    events = [e for _, e in injector.acked]
    row = reconcile(stack, events, "Redis kill -9, restarted from the AOF (everysec)", killed)
    ids = stack.meta.event_ids()
    lost_at = [killed - t for t, e in injector.acked if e.event.event_id not in ids]
    print(f"kill -9 of Redis: {len(lost_at)} of {len(events)} acknowledged events lost, "
          f"acknowledged {max(lost_at, default=0):.2f} s or less before the kill")
    assert 0 == row.dead
    assert all(age <= 2.0 for age in lost_at), "lost an event older than the AOF's second"


@pytest.mark.timeout(120 + 2 * REDIS_OUTAGE_S)
def test_redis_stopped_under_load_then_back(
        fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]) -> None:
    stack = relay_stack(fake_meta(FAKEMETA_LATENCY_MS="100"))
    events = [make_envelope(n) for n in ("Purchase", "ViewContent", "PageView")
              for _ in range(1_500)]
    stack.inject(events)
    stack.worker("high,normal,low")
    wait_for(lambda: stack.meta.pixel()["events"] > 0, 15, what="deliveries to start")

    stack.redis.stop()
    stopped = time.monotonic()
    time.sleep(REDIS_OUTAGE_S)  # the outage itself: its length is the fault
    stack.redis.start()

    row = reconcile(stack, events, f"Redis stopped {REDIS_OUTAGE_S:.0f} s under load (relay)",
                    stopped)
    assert (4_500, 0, 0, 0) == (row.delivered, row.dead, row.lost, row.twice)


# -- Meta -----------------------------------------------------------------------------------------
@pytest.mark.timeout(120 + 2 * META_OUTAGE_S)
def test_meta_down_with_5xx_then_timeouts_then_back(
        fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]) -> None:
    meta = fake_meta()
    stack = relay_stack(meta)
    stack.worker("high,normal,low")
    meta.faults(http_500_rate=1.0)
    events = [make_envelope(n) for n in ("Purchase", "PageView") for _ in range(1_000)]
    stack.inject(events)
    down = time.monotonic()

    half = META_OUTAGE_S / 2
    wait_for(lambda: time.monotonic() - down >= half, half + 5, what="5xx phase")
    meta.faults(http_500_rate=0.0, latency_ms=2_500)  # past the relay's 1.5 s timeout
    wait_for(lambda: time.monotonic() - down >= META_OUTAGE_S, half + 5, what="timeouts")
    refused_while_down = meta.received()
    meta.faults(latency_ms=0)

    row = reconcile(stack, events, f"fake Meta down {_duration(META_OUTAGE_S)}: "
                    f"{_duration(half)} of 5xx, then {_duration(half)} of timeouts", down)
    print(f"requests while down: {refused_while_down['requests']} "
          f"(rejected {refused_while_down['rejected']})")
    assert (2_000, 0, 0) == (row.delivered, row.dead, row.lost)
    # No retry storm: the pixel is paused and probed (at most every 3 s), so Meta sees about a
    # request every few seconds while down, not a retry of every batch at every backoff.
    assert refused_while_down["requests"] <= 2 + META_OUTAGE_S, refused_while_down


OTHER_PIXEL = "9876543210"
OTHER_EVENTS_PER_S = 1_000  # the other pixel's own limit (relay.limiter): its full speed
# Every request of the stormed pixel throttled; with the fixture's FAKEMETA_SEED=7 the die's
# first three draws (0.32, 0.15, 0.65) fall on 4, 17 and 613, one for each queue's batch.
STORM = {17: 0.2, 4: 0.3, 613: 0.5}


def flow_rate(stack: RelayStack, count: int) -> float:
    """Events per second the other pixel delivers: ``count`` injected at once, timed to the
    last one's arrival at the fake Meta. Its rate bucket is filled first, so every run starts
    alike (a limit of at least a batch, 1,000 events, charges each batch what it holds)."""
    client = stack.client()
    client.delete(keys.rate_limit(OTHER_PIXEL, "requests"), keys.rate_limit(OTHER_PIXEL, "events"))
    client.close()
    events = [make_envelope("ViewContent", pixel_id=OTHER_PIXEL) for _ in range(count)]
    started = time.monotonic()
    stack.inject(events)
    stack.wait_delivered(events, timeout_s=60, pixel_id=OTHER_PIXEL)
    return count / (time.monotonic() - started)


def test_a_throttling_storm_on_one_pixel_leaves_another_at_full_speed(
        fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]) -> None:
    meta = fake_meta()
    stack = relay_stack(meta, extra=f"""
[[pixels]]
id = "{OTHER_PIXEL}"
access_token_env = "PIXELRELAY_TEST_TOKEN"
events_per_s = {OTHER_EVENTS_PER_S}
""")
    stack.worker("high,normal,low")
    # Given the other pixel's rate without a storm
    unthrottled = flow_rate(stack, 3 * OTHER_EVENTS_PER_S)

    # When Meta throttles every request of the demo pixel (codes 4, 17 and 613) and it has
    # events waiting on all three queues, the other pixel's run starts at once
    meta.faults(error_rates=STORM, error_pixels=[DEMO_PIXEL])
    stormed = [make_envelope(n) for n in ("Purchase", "ViewContent", "PageView")
               for _ in range(100)]
    stack.inject(stormed)
    storm = time.monotonic()
    during = flow_rate(stack, 3 * OTHER_EVENTS_PER_S)
    rejected = meta.received()["rejected"]
    meta.faults(error_rates={}, error_pixels=[])

    # Then the other pixel kept its speed, and once the storm is over every stormed event is
    # delivered (throttling defers a batch, it spends no attempt)
    ratio = during / unthrottled
    row = reconcile(stack, stormed, f"throttling storm (codes 4, 17, 613) on one pixel; the "
                    f"other at {ratio:.0%} of its unthrottled rate", storm)
    print(f"other pixel: {unthrottled:.0f} events/s unthrottled, {during:.0f} during the storm; "
          f"rejected {rejected}")
    assert {"4", "17", "613"} == set(rejected), rejected
    assert ratio >= 0.6, (unthrottled, during)
    assert (300, 0, 0, 0) == (row.delivered, row.dead, row.lost, row.twice)


def test_a_revoked_token_pauses_then_a_fixed_one_delivers_the_waiting_events(
        fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack],
        processes: Callable[[CleanProcess], None]) -> None:
    # Given Meta refusing the pixel's token (190): the pixel pauses, its events wait (issue 14)
    revoked = fake_meta(FAKEMETA_TOKENS="some-other-token")
    stack = relay_stack(revoked)
    events = [make_envelope("Purchase") for _ in range(300)]
    stack.inject(events)
    stack.worker("high")
    wait_for(lambda: pause_status(stack.client(), [DEMO_PIXEL])[DEMO_PIXEL].paused, 30,
             what="the pixel to pause")

    # When the token is fixed (the same Graph API now takes it)
    revoked.process.stop()
    fixed = CleanProcess([str(VENV_BIN / "python"), "-m", "fakemeta"],
                         stack.directory / "fakemeta-fixed.log",
                         env={"FAKEMETA_PORT": str(revoked.port), "FAKEMETA_TOKENS": DEMO_TOKEN})
    processes(fixed.start())
    stack.meta = FakeMeta(fixed, revoked.port)
    wait_for(lambda: stack.meta.received() is not None, 20, what="the fixed fake Meta")
    fixed_at = time.monotonic()

    # Then every event is delivered once, by itself (the next probe), none dead or requeued
    wait_for(lambda: 300 == stack.states(events)["delivered"], 90, what="300 delivered")
    row = reconcile(stack, events, "token revoked (190): paused, fixed, resumed by itself",
                    fixed_at)
    assert (300, 0, 0, 0) == (row.delivered, row.dead, row.lost, row.twice)


def test_dead_letters_of_a_refusal_once_fixed_are_requeued_and_delivered(
        fake_meta: Callable[..., FakeMeta], relay_stack: Callable[..., RelayStack]) -> None:
    # Given Meta refusing every event for good (code 100, no retry): dead letters with a reason
    meta = fake_meta()
    stack = relay_stack(meta)
    meta.faults(error_rates={100: 1.0})
    events = [make_envelope("Purchase") for _ in range(200)]
    stack.inject(events)
    stack.worker("high")
    wait_for(lambda: 200 == stack.states(events)["dead"], 30, what="200 dead letters")

    # When the cause is fixed and the operator requeues them (pixelrelay requeue --all)
    meta.faults(error_rates={})
    fixed = time.monotonic()
    requeued = stack.tool("requeue", "--all")

    # Then every one is delivered once and no dead letter is left
    assert 0 == requeued.returncode, requeued.stderr
    wait_for(lambda: 200 == stack.states(events)["delivered"], 30, what="200 delivered")
    row = reconcile(stack, events, "Meta refused every event (code 100), fixed, dead letters "
                    "requeued and delivered", fixed)
    assert (200, 0, 0, 0) == (row.delivered, row.dead, row.lost, row.twice)

"""collector.enqueue: group commit to Redis, the disk spool while Redis is down, replay in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from collector.enqueue import DurableEnqueuer, EnqueueObserver
from collector.spool import Spool
from relay.errors import StorageError
from relay.inbox import EventWrite, Write, write_decoder, write_encoder
from tests.collector.support import eventually


def write(n: int) -> EventWrite:
    return EventWrite(queue="relay_low", pixel_id="1234567890", dedup_key=f"key-{n}",
                      received_ms=1_790_000_000_000 + n, payload=b'{"n": %d}' % n)


class FakeRedis:
    """A store function and a ping function in front of a switchable, pausable Redis."""

    def __init__(self) -> None:
        self.calls: list[list[Write]] = []
        self.entered = 0
        self.down = False
        self.hang = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def store(self, writes: Sequence[Write]) -> None:
        self.entered += 1
        await self.gate.wait()
        if self.hang:
            await asyncio.Event().wait()
        if self.down:
            raise ConnectionError("Connection refused")
        self.calls.append(list(writes))

    async def ping(self) -> bool:
        if self.hang:
            await asyncio.Event().wait()
        if self.down:
            raise ConnectionError("Connection refused")
        return True

    @property
    def stored(self) -> list[Write]:
        return [w for call in self.calls for w in call]


def spooled(spool: Spool) -> list[Write]:
    return [write_decoder.decode(record) for segment in spool.segments()
            for record in Spool.read_segment(segment)]


@pytest.fixture
def fake() -> FakeRedis:
    return FakeRedis()


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


def make_enqueuer(fake: FakeRedis, spool: Spool) -> DurableEnqueuer:
    return DurableEnqueuer(fake.store, fake.ping, spool, redis_timeout_s=0.2,
                           probe_interval_s=0.01)


@pytest.fixture
async def enqueuer(fake: FakeRedis, spool: Spool) -> AsyncIterator[DurableEnqueuer]:
    enqueuer = make_enqueuer(fake, spool)
    await enqueuer.start()
    yield enqueuer
    await enqueuer.stop()


async def test_a_write_is_stored_in_redis(enqueuer: DurableEnqueuer, fake: FakeRedis) -> None:
    destination = await enqueuer.store([write(1)])

    assert ("redis", [write(1)]) == (destination, fake.stored)


async def test_concurrent_requests_share_store_calls(enqueuer: DurableEnqueuer,
                                                     fake: FakeRedis) -> None:
    # Given a round trip in flight that holds back the writer
    fake.gate.clear()
    requests = [asyncio.create_task(enqueuer.store([write(i)])) for i in range(50)]
    await eventually(lambda: fake.entered, what="the first store call")

    # When it completes
    fake.gate.set()
    destinations = await asyncio.gather(*requests)

    # Then the other requests went in one more call, and every caller was answered
    assert ["redis"] * 50 == destinations
    assert sorted(map(repr, [write(i) for i in range(50)])) == sorted(map(repr, fake.stored))
    assert len(fake.calls) <= 2


async def test_writes_go_to_the_spool_when_redis_fails(enqueuer: DurableEnqueuer,
                                                       fake: FakeRedis, spool: Spool) -> None:
    fake.down = True

    destination = await enqueuer.store([write(1), write(2)])

    assert ("spool", [write(1), write(2)], True) == (
        destination, spooled(spool), enqueuer.spooling
    )


async def test_writes_go_to_the_spool_while_spooling_in_arrival_order(
        enqueuer: DurableEnqueuer, fake: FakeRedis, spool: Spool) -> None:
    fake.down = True
    await enqueuer.store([write(1)])

    destinations = [await enqueuer.store([write(2)]), await enqueuer.store([write(3)])]

    assert (["spool", "spool"], [write(1), write(2), write(3)], []) == (
        destinations, spooled(spool), fake.stored
    )


async def test_the_spool_is_replayed_in_order_when_redis_is_back(
        enqueuer: DurableEnqueuer, fake: FakeRedis, spool: Spool) -> None:
    # Given three writes spooled while Redis was down
    fake.down = True
    for n in (1, 2, 3):
        await enqueuer.store([write(n)])

    # When Redis answers again
    fake.down = False
    await eventually(lambda: not spool.has_pending(), what="the spool to drain")

    # Then they reached Redis in order, and the collector writes to Redis again
    assert [write(1), write(2), write(3)] == fake.stored
    assert ("redis", False) == (await enqueuer.store([write(4)]), enqueuer.spooling)
    assert [write(1), write(2), write(3), write(4)] == fake.stored


async def test_writes_arriving_during_replay_are_stored_after_the_spooled_ones(
        enqueuer: DurableEnqueuer, fake: FakeRedis, spool: Spool) -> None:
    # Given a spooled write whose replay is in flight
    fake.down = True
    await enqueuer.store([write(1)])
    fake.gate.clear()
    fake.down = False
    await eventually(lambda: fake.entered >= 2, what="the replay to start")

    # When a new write arrives meanwhile
    arriving = asyncio.create_task(enqueuer.store([write(2)]))
    fake.gate.set()

    # Then it is stored after the replayed one
    assert ("redis", [write(1), write(2)]) == (await arriving, fake.stored)


async def test_a_slow_store_times_out_to_the_spool(enqueuer: DurableEnqueuer, fake: FakeRedis,
                                                   spool: Spool) -> None:
    fake.hang = True

    destination = await enqueuer.store([write(1)])

    assert ("spool", [write(1)]) == (destination, spooled(spool))


async def test_storage_error_when_redis_and_the_spool_both_fail(
        enqueuer: DurableEnqueuer, fake: FakeRedis, spool: Spool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake.down = True

    def disk_full(records: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool, "append", disk_full)

    with pytest.raises(StorageError):
        await enqueuer.store([write(1)])


async def test_stop_stores_the_pending_writes(fake: FakeRedis, spool: Spool) -> None:
    # Given writes waiting behind a round trip in flight
    enqueuer = make_enqueuer(fake, spool)
    await enqueuer.start()
    fake.gate.clear()
    requests = [asyncio.create_task(enqueuer.store([write(i)])) for i in range(5)]
    await eventually(lambda: fake.entered, what="the first store call")

    # When the collector stops
    stopping = asyncio.create_task(enqueuer.stop())
    fake.gate.set()
    await stopping

    # Then every pending write was stored before stop returned
    assert (["redis"] * 5, 5) == (await asyncio.gather(*requests), len(fake.stored))


async def test_stop_returns_while_the_probe_pings_a_dead_redis(fake: FakeRedis,
                                                               spool: Spool) -> None:
    # Python 3.11's wait_for swallows a cancellation that lands just as the ping has failed;
    # back-to-back pings hit that window in most rounds, so twenty rounds catch a probe that
    # outlives stop().
    fake.down = True
    for round_ in range(20):
        enqueuer = DurableEnqueuer(fake.store, fake.ping, spool, redis_timeout_s=0.2,
                                   probe_interval_s=0)
        await enqueuer.start()
        await enqueuer.store([write(round_)])  # spooled: Redis is down, the probe runs
        for _ in range(round_ % 5):
            await asyncio.sleep(0)

        stopping = asyncio.create_task(enqueuer.stop())
        done, _ = await asyncio.wait({stopping}, timeout=2)

        if not done:  # end the runaway probe before failing: once pings block, a cancel lands
            fake.hang = True
            while not stopping.done():
                stopping.cancel()
                await asyncio.wait({stopping}, timeout=0.1)
        assert {stopping} == done, f"stop() hung in round {round_}"


async def test_writes_after_stop_are_refused(fake: FakeRedis, spool: Spool) -> None:
    enqueuer = make_enqueuer(fake, spool)
    await enqueuer.start()
    await enqueuer.stop()

    with pytest.raises(StorageError):
        await enqueuer.store([write(1)])


def spool_from_last_run(spool: Spool, writes: list[EventWrite]) -> None:
    spool.append([write_encoder.encode(w) for w in writes])
    spool.close()


async def test_the_last_runs_spool_is_replayed_at_start(fake: FakeRedis, spool: Spool) -> None:
    spool_from_last_run(spool, [write(1), write(2)])
    enqueuer = make_enqueuer(fake, spool)

    await enqueuer.start()
    try:
        await eventually(lambda: not spool.has_pending(), what="the old spool to drain")
    finally:
        await enqueuer.stop()

    assert [write(1), write(2)] == fake.stored


async def test_the_last_runs_spool_is_replayed_before_new_writes(fake: FakeRedis,
                                                                 spool: Spool) -> None:
    spool_from_last_run(spool, [write(1), write(2)])
    enqueuer = make_enqueuer(fake, spool)
    await enqueuer.start()
    try:
        await enqueuer.store([write(3)])
        await eventually(lambda: not spool.has_pending(), what="the spool to drain")
    finally:
        await enqueuer.stop()

    assert [write(1), write(2), write(3)] == fake.stored


async def test_the_last_runs_spool_waits_for_redis_at_start(fake: FakeRedis,
                                                            spool: Spool) -> None:
    spool_from_last_run(spool, [write(1)])
    fake.down = True
    enqueuer = make_enqueuer(fake, spool)

    await enqueuer.start()
    try:
        destination = await enqueuer.store([write(2)])
    finally:
        await enqueuer.stop()

    assert ("spool", [write(1), write(2)], []) == (destination, spooled(spool), fake.stored)


async def test_an_undecodable_record_is_skipped_and_the_rest_replayed(fake: FakeRedis,
                                                                       spool: Spool) -> None:
    spool.append([write_encoder.encode(write(1)), b"\xc1 not msgpack",
                  write_encoder.encode(write(2))])
    spool.close()
    enqueuer = make_enqueuer(fake, spool)

    await enqueuer.start()
    try:
        await eventually(lambda: not spool.has_pending(), what="the spool to drain")
        await enqueuer.store([write(3)])
    finally:
        await enqueuer.stop()

    assert [write(1), write(2), write(3)] == fake.stored


async def test_an_unreadable_segment_is_set_aside_and_writes_go_on(fake: FakeRedis,
                                                                    spool: Spool) -> None:
    spool.append([write_encoder.encode(write(1))])
    spool.close()
    broken = spool.segments()[0]
    enqueuer = make_enqueuer(fake, spool)
    original = Spool.read_segment

    def unreadable(path: Path) -> list[bytes]:
        if path == broken:
            raise PermissionError(13, "Permission denied", str(path))
        return original(path)

    spool.read_segment = unreadable  # type: ignore[method-assign]
    await enqueuer.start()
    try:
        await eventually(lambda: not spool.has_pending(), what="the segment to be set aside")
        await enqueuer.store([write(2)])
    finally:
        await enqueuer.stop()

    assert ([write(2)], True) == (fake.stored, broken.with_suffix(".bad").exists())


async def test_a_file_error_during_replay_neither_stops_the_writer_nor_loses_the_segment(
        fake: FakeRedis, spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a spooled write, and a disk that refuses the first removal of a replayed segment
    spool.append([write_encoder.encode(write(1))])
    refusals = []
    real_remove = Spool.remove_segment

    def remove_once_refused(path: Path) -> None:
        if not refusals:
            refusals.append(path)
            raise PermissionError(13, "Permission denied", str(path))
        real_remove(path)

    monkeypatch.setattr(Spool, "remove_segment", staticmethod(remove_once_refused))
    monkeypatch.setattr("collector.enqueue.REPLAY_RETRY_S", 0.01)
    enqueuer = make_enqueuer(fake, spool)
    await enqueuer.start()
    try:
        # Then new requests are still answered, and the segment is replayed and removed later
        await asyncio.wait_for(enqueuer.store([write(2)]), 2)
        await eventually(lambda: not spool.has_pending(), what="the segment to be removed")
    finally:
        await enqueuer.stop()
    assert 1 == len(refusals)
    assert [write(1), write(2)] == fake.stored  # a list: a segment stored twice would show


def refuse_removal(monkeypatch: pytest.MonkeyPatch, times: int) -> list[Path]:
    """Make ``Spool.remove_segment`` fail ``times`` times (a read-only remount, say); the list
    records each refusal."""
    refusals: list[Path] = []
    real_remove = Spool.remove_segment

    def remove(path: Path) -> None:
        if len(refusals) < times:
            refusals.append(path)
            raise PermissionError(13, "Read-only file system", str(path))
        real_remove(path)

    monkeypatch.setattr(Spool, "remove_segment", staticmethod(remove))
    monkeypatch.setattr("collector.enqueue.REPLAY_RETRY_S", 0.01)
    return refusals


async def test_a_replayed_segment_whose_removal_fails_is_not_stored_again(
        fake: FakeRedis, spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a spooled segment, and a disk that refuses its removal twice
    spool_from_last_run(spool, [write(1), write(2)])
    refusals = refuse_removal(monkeypatch, times=2)
    enqueuer = make_enqueuer(fake, spool)

    # When it is replayed
    await enqueuer.start()
    try:
        await eventually(lambda: not spool.has_pending(), what="the segment to be removed")
        destination = await asyncio.wait_for(enqueuer.store([write(3)]), 2)
    finally:
        await enqueuer.stop()

    # Then only the removal was retried: each write reached Redis once
    assert (2, "redis") == (len(refusals), destination)
    assert [write(1), write(2), write(3)] == fake.stored


async def test_a_replayed_segment_that_cannot_be_removed_is_set_aside(
        fake: FakeRedis, spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a spooled segment the disk never lets us remove
    spool_from_last_run(spool, [write(1), write(2)])
    segment = spool.segments()[0]
    refuse_removal(monkeypatch, times=1_000_000)
    enqueuer = make_enqueuer(fake, spool)

    # When it is replayed
    await enqueuer.start()
    try:
        await eventually(lambda: not spool.has_pending(), what="the segment to be set aside")
        destination = await asyncio.wait_for(enqueuer.store([write(3)]), 2)
    finally:
        await enqueuer.stop()

    # Then it was set aside after a few attempts, its writes stored once, and Redis used again
    assert (True, "redis") == (segment.with_suffix(".bad").exists(), destination)
    assert [write(1), write(2), write(3)] == fake.stored


async def test_a_replayed_segment_that_can_be_neither_removed_nor_set_aside_is_never_stored_again(
        fake: FakeRedis, spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a spooled segment the disk lets us neither remove nor rename
    spool_from_last_run(spool, [write(1), write(2)])
    refusals = refuse_removal(monkeypatch, times=1_000_000)
    renames: list[Path] = []

    def refuse_rename(path: Path) -> Path:
        renames.append(path)
        raise PermissionError(13, "Read-only file system", str(path))

    monkeypatch.setattr(spool, "quarantine", refuse_rename)
    enqueuer = make_enqueuer(fake, spool)

    # When its replay is retried many times
    await enqueuer.start()
    try:
        await eventually(lambda: len(renames) >= 3, what="several attempts to set it aside")
        destination = await asyncio.wait_for(enqueuer.store([write(3)]), 2)
        tried = len(refusals)
        await eventually(lambda: len(refusals) >= tried + 3, what="more retries")
    finally:
        await enqueuer.stop()

    # Then its writes reached Redis once, and new requests are still answered
    assert ("spool", [write(1), write(2)]) == (destination, fake.stored)


class RecordingObserver(EnqueueObserver):
    def __init__(self) -> None:
        self.states: list[tuple[bool, int]] = []

    def spool_state(self, spooling: bool, pending_bytes: int) -> None:
        self.states.append((spooling, pending_bytes))


def claimed_pair(root: Path) -> tuple[Spool, Spool]:
    """Two workers' spools; the second stands for a worker that stops while the first runs
    (granian respawning a crashed worker while the others run)."""
    return Spool.claim(root), Spool.claim(root)


async def test_a_stopped_workers_spool_is_adopted_and_replayed_without_a_restart(
        fake: FakeRedis, tmp_path: Path) -> None:
    running, stopped = claimed_pair(tmp_path)
    enqueuer = DurableEnqueuer(fake.store, fake.ping, running, redis_timeout_s=0.2,
                               probe_interval_s=0.01, adopt_interval_s=0.01)
    await enqueuer.start()
    try:
        # Given a worker that spooled two writes, then stopped
        stopped.append([write_encoder.encode(write(1)), write_encoder.encode(write(2))])
        stopped.close()

        # Then the running worker replays them, and keeps answering
        await eventually(lambda: len(fake.stored) == 2, what="the orphaned writes in Redis")
        destination = await asyncio.wait_for(enqueuer.store([write(3)]), 2)
    finally:
        await enqueuer.stop()

    assert ("redis", [write(1), write(2), write(3)]) == (destination, fake.stored)
    assert ([], []) == (running.segments(), stopped.segments())


async def test_adopted_segments_count_as_pending_while_redis_is_down(fake: FakeRedis,
                                                                      tmp_path: Path) -> None:
    running, stopped = claimed_pair(tmp_path)
    observer = RecordingObserver()
    fake.down = True
    enqueuer = DurableEnqueuer(fake.store, fake.ping, running, redis_timeout_s=0.2,
                               probe_interval_s=0.01, adopt_interval_s=0.01, observer=observer)
    await enqueuer.start()
    try:
        orphan_bytes = stopped.append([write_encoder.encode(write(1))])
        stopped.close()

        await eventually(lambda: running.has_pending(), what="the orphan to be adopted")
        await eventually(lambda: (True, orphan_bytes) in observer.states,
                         what="the adopted bytes in the spool gauge")
    finally:
        await enqueuer.stop()

    assert (True, []) == (enqueuer.spooling, fake.stored)

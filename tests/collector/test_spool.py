"""collector.spool: framed records in numbered segments, read back oldest first."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from collector import spool as spool_module
from collector.spool import Spool
from relay.errors import ConfigError


def read_all(spool: Spool) -> list[bytes]:
    return [record for segment in spool.segments() for record in Spool.read_segment(segment)]


def test_appended_records_read_back_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([b"first", b"second"])
    spool.append([b"third"])

    segment = spool.oldest_segment()

    assert segment is not None
    assert [b"first", b"second", b"third"] == Spool.read_segment(segment)


def test_append_returns_the_bytes_written(tmp_path: Path) -> None:
    spool = Spool(tmp_path)

    written = spool.append([b"abc", b"de"])

    assert (2 * 8 + 5, 2 * 8 + 5) == (written, spool.pending_bytes())  # 8-byte frame headers


def test_an_empty_append_creates_no_segment(tmp_path: Path) -> None:
    spool = Spool(tmp_path)

    assert (0, []) == (spool.append([]), spool.segments())


def test_a_full_segment_rotates_to_a_new_one(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_max_bytes=64)
    records = [bytes([65 + i]) * 56 for i in range(4)]  # 8-byte header + 56 = one full segment

    for record in records:
        spool.append([record])

    assert 4 == len(spool.segments())
    assert records == read_all(spool)


def test_a_torn_tail_is_skipped_and_earlier_records_are_read(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([b"kept-1", b"kept-2"])
    spool.append([b"torn-by-a-crash"])
    spool.close()
    segment = spool.segments()[0]
    os.truncate(segment, segment.stat().st_size - 5)

    assert [b"kept-1", b"kept-2"] == Spool.read_segment(segment)


def test_a_torn_header_is_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([b"kept"])
    spool.close()
    segment = spool.segments()[0]
    with segment.open("ab") as f:
        f.write(b"\x00\x00\x00")  # half a frame header

    assert [b"kept"] == Spool.read_segment(segment)


def test_a_record_with_a_crc_mismatch_is_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([b"good", b"damaged"])
    spool.close()
    segment = spool.segments()[0]
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF
    segment.write_bytes(bytes(data))

    assert [b"good"] == Spool.read_segment(segment)


def test_oldest_segment_seals_the_active_segment(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([b"before"])

    sealed = spool.oldest_segment()
    spool.append([b"after"])

    assert sealed is not None
    assert ([b"before"], 2) == (Spool.read_segment(sealed), len(spool.segments()))
    assert [b"before", b"after"] == read_all(spool)


def test_oldest_segment_is_none_when_empty(tmp_path: Path) -> None:
    assert None is Spool(tmp_path).oldest_segment()


def test_removing_the_last_segment_leaves_nothing_pending(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([b"record"])
    segment = spool.oldest_segment()
    assert segment is not None

    Spool.remove_segment(segment)

    assert (False, 0) == (spool.has_pending(), spool.pending_bytes())


def test_a_new_spool_on_the_same_directory_sees_pending_segments(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.append([b"from-the-last-run"])
    first.close()

    second = Spool(tmp_path)

    assert (True, [b"from-the-last-run"]) == (second.has_pending(), read_all(second))


def test_appends_after_reopening_go_after_the_old_segments(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.append([b"old"])
    first.close()

    second = Spool(tmp_path)
    second.append([b"new"])

    assert (2, [b"old", b"new"]) == (len(second.segments()), read_all(second))


def test_the_spool_directory_is_created(tmp_path: Path) -> None:
    Spool(tmp_path / "deeper" / "spool").append([b"x"])

    assert 1 == len(list((tmp_path / "deeper" / "spool").iterdir()))


def test_records_after_a_failed_append_are_not_lost(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a disk that fills up halfway through a frame
    spool = Spool(tmp_path)
    spool.append([b"acknowledged-before"])
    real_write = os.write
    calls = 0

    def half_then_full(fd: int, data: memoryview) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module.os, "write", half_then_full)
    with pytest.raises(OSError):
        spool.append([b"refused-" * 10])
    monkeypatch.setattr(spool_module.os, "write", real_write)

    # When space is back and the next group is acknowledged
    spool.append([b"acknowledged-after"])

    # Then replay finds both acknowledged groups
    assert [b"acknowledged-before", b"acknowledged-after"] == read_all(spool)


# -- one directory per worker process -------------------------------------------------------------
def replay_everything(spool: Spool) -> list[bytes]:
    """What the enqueuer does when Redis is back: oldest segment first, removed once stored."""
    replayed = []
    while (segment := spool.oldest_segment()) is not None:
        replayed += Spool.read_segment(segment)
        Spool.remove_segment(segment)
    return replayed


def test_two_workers_claim_different_directories(tmp_path: Path) -> None:
    first, second = Spool.claim(tmp_path), Spool.claim(tmp_path)

    assert (tmp_path / "worker-0", tmp_path / "worker-1") == (first.directory, second.directory)


def test_a_worker_replaying_never_removes_what_another_is_writing(tmp_path: Path) -> None:
    a, b = Spool.claim(tmp_path), Spool.claim(tmp_path)
    a.append([b"a1"])
    b.append([b"b1"])

    replayed_by_a = replay_everything(a)
    b.append([b"b2"])

    assert ([b"a1"], [b"b1", b"b2"]) == (replayed_by_a, read_all(b))


def test_a_closed_workers_directory_is_claimed_again(tmp_path: Path) -> None:
    first = Spool.claim(tmp_path)
    first.append([b"left-behind"])
    first.close()

    again = Spool.claim(tmp_path)

    assert (tmp_path / "worker-0", [b"left-behind"]) == (again.directory, read_all(again))


def test_segments_of_a_directory_nobody_holds_are_adopted_in_order(tmp_path: Path) -> None:
    # Given three workers last time, and the third's segments still on disk
    workers = [Spool.claim(tmp_path, segment_max_bytes=1) for _ in range(3)]
    workers[0].append([b"own"])
    workers[2].append([b"orphan-1"])
    workers[2].append([b"orphan-2"])
    for worker in workers:
        worker.close()

    # When only two come back
    first, second = Spool.claim(tmp_path), Spool.claim(tmp_path)

    assert ([b"own", b"orphan-1", b"orphan-2"], []) == (read_all(first), read_all(second))
    assert [] == list((tmp_path / "worker-2").glob("*.spool"))


def test_a_running_workers_segments_are_not_adopted(tmp_path: Path) -> None:
    running = Spool.claim(tmp_path)
    running.append([b"mine"])

    newcomer = Spool.claim(tmp_path)

    assert ([b"mine"], []) == (read_all(running), read_all(newcomer))


def test_segments_put_at_the_top_level_are_adopted(tmp_path: Path) -> None:
    by_hand = Spool(tmp_path)  # a restored backup, or the layout before worker directories
    by_hand.append([b"restored"])
    by_hand.close()

    claimed = Spool.claim(tmp_path)

    assert ([b"restored"], []) == (read_all(claimed), by_hand.segments())


def test_adopt_orphans_takes_the_segments_of_a_worker_that_stopped_since_the_claim(
        tmp_path: Path) -> None:
    running, stopped = Spool.claim(tmp_path), Spool.claim(tmp_path)
    running.append([b"own"])
    stopped.append([b"orphan-1", b"orphan-2"])
    stopped.close()

    adopted = running.adopt_orphans()

    assert (1, [b"own", b"orphan-1", b"orphan-2"]) == (adopted, read_all(running))
    assert [] == stopped.segments()


def test_adopt_orphans_leaves_a_running_workers_segments(tmp_path: Path) -> None:
    first, second = Spool.claim(tmp_path), Spool.claim(tmp_path)
    second.append([b"still-writing"])

    assert (0, [], [b"still-writing"]) == (first.adopt_orphans(), read_all(first),
                                           read_all(second))


def test_appends_after_an_adoption_go_after_the_adopted_segments(tmp_path: Path) -> None:
    running, stopped = Spool.claim(tmp_path), Spool.claim(tmp_path)
    running.append([b"before"])
    stopped.append([b"orphan"])
    stopped.close()

    running.adopt_orphans()
    running.append([b"after"])

    assert [b"before", b"orphan", b"after"] == read_all(running)


def test_adopt_orphans_does_nothing_for_a_spool_that_was_not_claimed(tmp_path: Path) -> None:
    unheld = Spool(tmp_path / "worker-1")
    unheld.append([b"not-mine"])
    unheld.close()

    plain = Spool(tmp_path / "worker-0")

    assert (0, [], [b"not-mine"]) == (plain.adopt_orphans(), read_all(plain), read_all(unheld))


def test_a_file_system_without_flock_is_a_configuration_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(spool_module.fcntl, "flock", no_locks)

    with pytest.raises(ConfigError) as caught:
        Spool.claim(tmp_path)

    message = str(caught.value)
    assert message.startswith("collector.spool_dir must be on a local file system that supports "
                              "flock: "), message
    assert "No locks available" in message

"""Append-only disk spool: where events go while Redis is down or slow.

Records are framed (length, CRC32, bytes) in numbered segment files. ``append`` writes a group of
records and fsyncs once, so the collector can acknowledge them. Replay reads whole segments
oldest first and removes a segment only after all its records reached Redis: a crash mid-replay
repeats that segment (the relay's dedup absorbs repeats), it never loses one. A torn record at
the end of a segment (a crash during ``append``) was never acknowledged and is skipped.

Each collector worker process owns one subdirectory of ``collector.spool_dir``
(``worker-<n>``), held with an exclusive ``flock`` for as long as it runs: two workers never
write to, replay or delete each other's segments. A worker that claims its directory also adopts
the segments of directories no running worker holds (a worker that died and was not replaced,
fewer workers after a restart, or segments put at the top level by hand); ``adopt_orphans`` does
it again while the worker runs, for directories given up since (granian's reload starts the new
workers before it stops the old ones, so no new worker can claim the old ones' directories).

All methods are synchronous; the collector runs them off the event loop, one group at a time.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from relay.errors import ConfigError

_HEADER = struct.Struct(">II")  # length, crc32
_SUFFIX = ".spool"
_WORKER_PREFIX = "worker-"
_LOCK_NAME = ".lock"
_CLAIMS_LOCK_NAME = ".claims.lock"


def _flock(fd: int, operation: int, path: Path) -> None:
    """``fcntl.flock``, with a file system that cannot lock (ENOLCK, EOPNOTSUPP: some NFS and
    FUSE mounts) reported as the configuration error it is, not as an OSError that would
    crash-loop every worker without saying why."""
    try:
        fcntl.flock(fd, operation)
    except BlockingIOError:
        raise
    except OSError as exc:
        raise ConfigError(
            "collector.spool_dir must be on a local file system that supports flock: "
            f"locking {path} failed ({exc.strerror or exc})"
        ) from exc


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path``, or ``None`` if another holder has it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, path)
    except BlockingIOError:
        os.close(fd)
        return None
    except ConfigError:
        os.close(fd)
        raise
    return fd


@contextmanager
def _claims_serialized(root: Path) -> Iterator[None]:
    """One process at a time chooses its directory and adopts orphans."""
    path = root / _CLAIMS_LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _flock(fd, fcntl.LOCK_EX, path)
        yield
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # renames and new names survive a power cut too
    finally:
        os.close(dir_fd)


class Spool:
    def __init__(self, directory: str | os.PathLike[str],
                 segment_max_bytes: int = 16 * 1024 * 1024, *, lock_fd: int | None = None
                 ) -> None:
        self.directory = Path(directory)
        self.segment_max_bytes = segment_max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock_fd
        self._root: Path | None = None  # set by ``claim``: where the other workers' directories are
        self._fd: int | None = None
        self._active: Path | None = None
        self._active_size = 0

    @classmethod
    def claim(cls, root: str | os.PathLike[str],
              segment_max_bytes: int = 16 * 1024 * 1024) -> Spool:
        """This process's own spool: the first ``root/worker-<n>`` no running process holds,
        with the segments of every unheld directory (and of ``root`` itself) moved into it."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        with _claims_serialized(root):
            for n in itertools.count():
                directory = root / f"{_WORKER_PREFIX}{n}"
                directory.mkdir(exist_ok=True)
                lock_fd = _try_lock(directory / _LOCK_NAME)
                if lock_fd is not None:
                    break
            spool = cls(directory, segment_max_bytes, lock_fd=lock_fd)
            spool._root = root
            spool._adopt_orphans(root)
        return spool

    def adopt_orphans(self) -> int:
        """Adopt, as ``claim`` did, the segments of directories no running worker holds now;
        return how many. Does nothing for a spool ``claim`` did not make."""
        if self._root is None:
            return 0
        with _claims_serialized(self._root):
            return self._adopt_orphans(self._root)

    def _adopt_orphans(self, root: Path) -> int:
        adopted = self._adopt(root)
        for directory in sorted(root.glob(f"{_WORKER_PREFIX}*")):
            if directory == self.directory or not directory.is_dir():
                continue
            lock_fd = _try_lock(directory / _LOCK_NAME)
            if lock_fd is None:
                continue  # a running worker's own
            try:
                adopted += self._adopt(directory)
            finally:
                os.close(lock_fd)
        return adopted

    def _adopt(self, directory: Path) -> int:
        """Move ``directory``'s segments, in their order, after this spool's own; return how
        many."""
        orphans = sorted(directory.glob(f"*{_SUFFIX}"))
        if not orphans:
            return 0
        self._close_active()
        number = self._last_number()
        for orphan in orphans:
            number += 1
            orphan.rename(self.directory / f"{number:020d}{_SUFFIX}")
        _fsync_directory(self.directory)
        return len(orphans)

    # -- writing -------------------------------------------------------------------------------
    def append(self, records: Iterable[bytes]) -> int:
        """Write records and fsync; return bytes written. Raises OSError when the disk refuses."""
        frames = b"".join(_HEADER.pack(len(r), zlib.crc32(r)) + r for r in records)
        if not frames:
            return 0
        if self._fd is None or self._active_size >= self.segment_max_bytes:
            self._open_new_segment()
        assert self._fd is not None
        view = memoryview(frames)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError:
            # A torn frame ends replay of this segment: later groups must start a new one.
            self._close_active()
            raise
        self._active_size += len(frames)
        return len(frames)

    def _open_new_segment(self) -> None:
        self._close_active()
        number = self._last_number() + 1
        path = self.directory / f"{number:020d}{_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._active = path
        self._active_size = 0
        _fsync_directory(self.directory)

    def _close_active(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
        self._active = None
        self._active_size = 0

    def close(self) -> None:
        """Close the segment being written and give up the directory (if claimed)."""
        self._close_active()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- reading -------------------------------------------------------------------------------
    def segments(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{_SUFFIX}"))

    def _last_number(self) -> int:
        segments = self.segments()
        return int(segments[-1].name.removesuffix(_SUFFIX)) if segments else 0

    def has_pending(self) -> bool:
        return bool(self.segments())

    def pending_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.segments())

    def oldest_segment(self) -> Path | None:
        """The oldest segment, sealed first if it is the one being written to."""
        segments = self.segments()
        if not segments:
            return None
        if self._active is not None and segments[0] == self._active:
            self._close_active()
        return segments[0]

    @staticmethod
    def read_segment(path: Path) -> list[bytes]:
        data = path.read_bytes()
        records: list[bytes] = []
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, offset)
            start = offset + _HEADER.size
            record = data[start : start + length]
            if len(record) < length or zlib.crc32(record) != crc:
                break  # torn tail: written by a crash before it was acknowledged
            records.append(record)
            offset = start + length
        return records

    @staticmethod
    def remove_segment(path: Path) -> None:
        path.unlink(missing_ok=True)

    @staticmethod
    def quarantine(path: Path) -> Path:
        """Rename a segment that cannot be replayed; it no longer counts as pending."""
        kept = path.with_suffix(".bad")
        path.rename(kept)
        return kept

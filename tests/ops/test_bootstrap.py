"""ops/bootstrap: the system packages of a make target, installed when missing, quiet otherwise.

Each test gives the script its own package list and a stand-in apt-get on PATH that records
its arguments and "installs" a package by creating the file its check looks for.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "ops" / "bootstrap"

FAKE_APT_GET = """#!/usr/bin/env bash
echo "$*" >> "$APT_LOG"
if [[ " $* " == *" install "* ]]; then
  for arg in "$@"; do
    case "$arg" in -*|install) ;; *) touch "$INSTALLED/$arg" ;; esac
  done
fi
"""


def write_list(path: Path, installed: Path, rows: list[tuple[str, str]]) -> Path:
    lines = ["# package | check | needed-by | why"]
    lines += [f"{name} | test -e {installed}/{name} | {needed} | because" for name, needed in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def sandbox() -> Iterator[dict[str, Path]]:
    """A world-readable folder (pytest's tmp_path is not), so another user can run it too."""
    tmp_path = Path(tempfile.mkdtemp(prefix="pixelrelay-bootstrap-"))
    tmp_path.chmod(0o755)
    try:
        yield _sandbox(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _sandbox(tmp_path: Path) -> dict[str, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"
    apt.write_text(FAKE_APT_GET)
    apt.chmod(0o755)
    installed = tmp_path / "installed"
    installed.mkdir()
    return {"bin": bin_dir, "installed": installed, "log": tmp_path / "apt.log",
            "list": tmp_path / "packages.txt"}


def run(sandbox: dict[str, Path], target: str, *, prefix: tuple[str, ...] = ()
        ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{sandbox['bin']}:/usr/bin:/bin",
           "BOOTSTRAP_PACKAGES": str(sandbox["list"]), "APT_LOG": str(sandbox["log"]),
           "INSTALLED": str(sandbox["installed"])}
    return subprocess.run([*prefix, "bash", str(BOOTSTRAP), target], env=env,
                          capture_output=True, text=True, timeout=30, check=False)


def test_nothing_missing_is_silent_and_runs_no_apt_get(sandbox: dict[str, Path]) -> None:
    write_list(sandbox["list"], sandbox["installed"], [("nginx", "test")])
    (sandbox["installed"] / "nginx").touch()

    result = run(sandbox, "test")

    assert (0, "", "") == (result.returncode, result.stdout, result.stderr)
    assert not sandbox["log"].exists()


def test_missing_packages_of_the_target_are_installed_in_one_call(
        sandbox: dict[str, Path]) -> None:
    write_list(sandbox["list"], sandbox["installed"],
               [("nginx", "test"), ("wrk", "test,up"), ("chromium", "up")])

    result = run(sandbox, "test")

    assert 0 == result.returncode, result.stderr
    assert "bootstrap: installing nginx wrk for 'make test'" in result.stdout
    calls = sandbox["log"].read_text().splitlines()
    assert 2 == len(calls)
    assert calls[0].endswith("update")
    assert calls[1].endswith("install -y --no-install-recommends nginx wrk")
    assert not (sandbox["installed"] / "chromium").exists()  # only make up needs it


def test_a_package_whose_check_still_fails_after_apt_get_is_named(
        sandbox: dict[str, Path]) -> None:
    sandbox["list"].write_text("ghost | false | test | never installs\n")

    result = run(sandbox, "test")

    assert 1 == result.returncode
    assert "ghost still missing after apt-get; run: sudo apt-get install -y ghost" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_without_root_or_sudo_it_names_the_one_command_to_run(sandbox: dict[str, Path]) -> None:
    write_list(sandbox["list"], sandbox["installed"], [("nginx", "test"), ("wrk", "test")])
    for path in (sandbox["bin"], sandbox["installed"], sandbox["list"]):
        path.chmod(0o755)
    nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    assert shutil.which("setpriv") is not None

    result = run(sandbox, "test", prefix=nobody)

    assert 1 == result.returncode
    assert ("bootstrap: 'make test' needs system packages that are missing; "
            "run: sudo apt-get install -y nginx wrk\n") == result.stderr
    assert not sandbox["log"].exists()

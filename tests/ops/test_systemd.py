"""ops/systemd: the units pass `systemd-analyze verify` and keep their restart, drain and
hardening settings, so a later edit cannot drop them silently."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from relay.config import CollectorSettings
from relay.queues import PRIORITIES
from tests.support import ROOT

UNITS = ROOT / "ops" / "systemd"
SHIPPED_EXEC = "/opt/pixelrelay/.venv/bin/pixelrelay"
CONFIG = "/etc/pixelrelay/pixelrelay.toml"
SERVICES = ("pixelrelay-collector.service", "pixelrelay-relay@.service",
            "pixelrelay-dashboard.service")
REDIS_DROP_IN = UNITS / "redis-server.service.d" / "pixelrelay.conf"

# Present, with exactly this value, in every pixelrelay service.
COMMON_SERVICE_SETTINGS = {
    "User": "pixelrelay",
    "Group": "pixelrelay",
    "EnvironmentFile": "/etc/pixelrelay/secrets.env",
    "WorkingDirectory": "/var/lib/pixelrelay",
    "Restart": "always",
    "RestartSec": "1",
    "KillSignal": "SIGTERM",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
}
EXEC_START = {
    "pixelrelay-collector.service": f"{SHIPPED_EXEC} collector --config {CONFIG}",
    "pixelrelay-relay@.service": f"{SHIPPED_EXEC} relay --config {CONFIG} --queues %i",
    "pixelrelay-dashboard.service": f"{SHIPPED_EXEC} dashboard --config {CONFIG}",
}
# Long enough to drain: the collector's in-flight requests, the relay's batches to Meta.
MIN_STOP_TIMEOUT_S = {
    "pixelrelay-collector.service": 30,
    "pixelrelay-relay@.service": 60,
    "pixelrelay-dashboard.service": 1,
}

Directives = dict[str, dict[str, list[str]]]


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze is not installed: the ops tests need it "
                    "(apt-get install systemd)", pytrace=False)
    return found


def parse_unit(path: Path) -> Directives:
    """Section -> key -> every value assigned, in order (systemd keys may repeat)."""
    sections: Directives = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} is outside any section"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def effective(values: list[str]) -> list[str]:
    """What systemd keeps of a repeated key: an empty assignment resets the list before it."""
    if "" in values:
        values = values[len(values) - values[::-1].index("") :]
    return values


def last(directives: Directives, section: str, key: str) -> str | None:
    values = effective(directives.get(section, {}).get(key, []))
    return values[-1] if values else None


def verifiable_names() -> list[str]:
    """Every shipped unit as systemd would load it; the template as each of its instances."""
    names = []
    for path in sorted(UNITS.glob("pixelrelay*")):
        if "@." in path.name:
            names += [path.name.replace("@.", f"@{p}.") for p in PRIORITIES]
        else:
            names.append(path.name)
    return names


def copy_for_verify(directory: Path) -> None:
    """The units with ExecStart pointing at an executable that exists here (verify checks it)."""
    stand_in = shutil.which("true")
    assert stand_in is not None
    for path in UNITS.glob("pixelrelay*"):
        (directory / path.name).write_text(path.read_text().replace(SHIPPED_EXEC, stand_in))
    # Debian's redis-server.service, reduced to what verify needs, to load the drop-in with.
    (directory / "redis-server.service").write_text(f"[Service]\nExecStart={stand_in}\n")
    drop_ins = directory / "redis-server.service.d"
    drop_ins.mkdir()
    shutil.copy(REDIS_DROP_IN, drop_ins / REDIS_DROP_IN.name)


def run_verify(path: Path) -> tuple[int, str]:
    result = subprocess.run([systemd_analyze(), "verify", "--man=no", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    return result.returncode, result.stdout + result.stderr


def test_every_unit_is_checked() -> None:
    shipped = {p.name for p in UNITS.glob("pixelrelay*")}
    assert {*SERVICES, "pixelrelay.target"} == shipped


@pytest.mark.parametrize("name", [*verifiable_names(), "redis-server.service"])
def test_unit_passes_systemd_analyze_verify(tmp_path: Path, name: str) -> None:
    copy_for_verify(tmp_path)

    code, output = run_verify(tmp_path / name)

    about_ours = [line for line in output.splitlines()
                  if str(tmp_path) in line or "pixelrelay" in line]
    assert 0 == code, output
    assert [] == about_ours


@pytest.mark.parametrize("name", SERVICES)
def test_service_keeps_restart_and_hardening_settings(name: str) -> None:
    unit = parse_unit(UNITS / name)

    actual = {key: last(unit, "Service", key) for key in COMMON_SERVICE_SETTINGS}

    assert COMMON_SERVICE_SETTINGS == actual
    assert "/var/lib/pixelrelay" in effective(unit["Service"].get("ReadWritePaths", []))


@pytest.mark.parametrize("name", SERVICES)
def test_service_runs_the_pixelrelay_command(name: str) -> None:
    assert EXEC_START[name] == last(parse_unit(UNITS / name), "Service", "ExecStart")


@pytest.mark.parametrize("name", SERVICES)
def test_service_gets_time_to_drain_on_stop(name: str) -> None:
    timeout = last(parse_unit(UNITS / name), "Service", "TimeoutStopSec")

    assert timeout is not None and timeout.isdigit(), f"TimeoutStopSec={timeout} (want seconds)"
    assert int(timeout) >= MIN_STOP_TIMEOUT_S[name]


def test_collector_stop_timeout_outlasts_its_default_grace() -> None:
    # granian gets collector.shutdown_grace_s to finish requests; systemd must not kill first.
    unit = parse_unit(UNITS / "pixelrelay-collector.service")

    timeout = int(last(unit, "Service", "TimeoutStopSec") or 0)

    assert timeout > CollectorSettings().shutdown_grace_s


@pytest.mark.parametrize("name", SERVICES)
def test_service_belongs_to_the_target(name: str) -> None:
    unit = parse_unit(UNITS / name)

    assert "pixelrelay.target" in effective(unit["Unit"].get("PartOf", []))
    assert "pixelrelay.target" in effective(unit["Install"].get("WantedBy", []))


def test_target_starts_at_boot() -> None:
    target = parse_unit(UNITS / "pixelrelay.target")

    assert "multi-user.target" in effective(target["Install"].get("WantedBy", []))

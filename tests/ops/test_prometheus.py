"""ops/prometheus: the scrape config and alert rules pass promtool, every rule is exercised by a
promtool unit test on synthetic series, and every query names a metric the project exports."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import yaml

from tests.ops.metric_catalog import names_in_query, series_names
from tests.support import ROOT

PROMETHEUS = ROOT / "ops" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: ops/bootstrap installs Debian's prometheus package"
    return subprocess.run([binary, *args], cwd=PROMETHEUS, capture_output=True, text=True,
                          timeout=60, check=False)


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def unit_tests() -> list[dict[str, Any]]:
    return list(yaml.safe_load((PROMETHEUS / "rules.test.yml").read_text())["tests"])


def test_scrape_config_passes_promtool_check_config() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert 0 == result.returncode, result.stdout + result.stderr


def test_alert_rules_pass_promtool_check_rules() -> None:
    result = promtool("check", "rules", "rules.yml")
    assert 0 == result.returncode, result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests_on_synthetic_series() -> None:
    result = promtool("test", "rules", "rules.test.yml")
    assert (0, "SUCCESS") == (result.returncode, result.stdout.split()[-1]), (
        result.stdout + result.stderr)


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() -> None:
    firing, quiet = set(), set()
    for test in unit_tests():
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {rule["alert"] for rule in rules()}
    assert (alerts, alerts) == (firing, quiet)


def test_every_rule_reads_only_metrics_the_project_exports() -> None:
    unknown = {rule["alert"]: names_in_query(rule["expr"]) - series_names() for rule in rules()}
    assert {} == {alert: names for alert, names in unknown.items() if names}


def test_the_shipped_processes_are_scraped_on_their_default_ports() -> None:
    from relay.config import Settings
    from relay.queues import metrics_port

    settings = Settings()
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {job["job_name"]: sorted(t for c in job["static_configs"] for t in c["targets"])
               for job in config["scrape_configs"]}
    relay_ports = [metrics_port(settings.relay.metrics_port, [p])
                   for p in ("high", "normal", "low")]
    assert {
        "pixelrelay-collector": [f"127.0.0.1:{settings.collector.port}"],
        "pixelrelay-relay": [f"127.0.0.1:{port}" for port in relay_ports],
    } == targets

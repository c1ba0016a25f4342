"""ops/grafana: the dashboard JSON loads the shipped metric names only."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.ops.metric_catalog import names_in_query, series_names
from tests.support import ROOT

BOARD = ROOT / "ops" / "grafana" / "pixelrelay.json"


def board() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(BOARD.read_text())
    return loaded


def queries() -> list[tuple[str, str]]:
    """(where, expression) of every panel target and every templating query."""
    found = [(panel["title"], target["expr"]) for panel in board()["panels"]
             for target in panel["targets"]]
    for variable in board()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append((f"${variable['name']}", query["query"] if isinstance(query, dict)
                          else query))
    return found


def names_read(expr: str) -> set[str]:
    label_values = re.fullmatch(r"\s*label_values\((\w+)\s*,\s*\w+\)\s*", expr)
    return {label_values[1]} if label_values else names_in_query(expr)


def test_every_query_names_only_metrics_the_project_exports() -> None:
    unknown = {where: names_read(expr) - series_names() for where, expr in queries()}
    assert {} == {where: names for where, names in unknown.items() if names}


def test_every_query_reads_at_least_one_metric() -> None:
    assert [] == [where for where, expr in queries() if not names_read(expr) - {"up"}]


def test_the_board_shows_throughput_latency_queue_age_dead_letters_and_pixel_health() -> None:
    read = set().union(*(names_read(expr) for _, expr in queries()))
    assert {
        "pixelrelay_relay_events_delivered_total",
        "pixelrelay_relay_meta_request_duration_seconds_bucket",
        "pixelrelay_relay_oldest_waiting_seconds",
        "pixelrelay_relay_events_dead_total",
        "pixelrelay_relay_limiter_factor",
        "pixelrelay_relay_pixel_health_ok",
    } <= read


def test_panels_have_unique_ids_and_every_target_uses_the_datasource_variable() -> None:
    panels = board()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    assert {"${datasource}"} == {t["datasource"]["uid"] for p in panels for t in p["targets"]}

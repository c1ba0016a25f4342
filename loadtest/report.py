"""The load test's Markdown report and its charts, from locust's stats history and the verdict.

``write(out, summary, context)`` reads ``out/locust_stats_history.csv`` (locust
``--csv-full-history``: one row per second and per request name) and the ``summary.json`` that
``loadtest/locustfile.py`` wrote, draws three PNG charts with matplotlib (a plotting library is
better kept than hand-drawn SVG: axes, ticks and legends come for free) and writes
``out/report.md``.
"""

from __future__ import annotations

import csv
import itertools
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtest._harness import load_average, machine_summary

__all__ = ["load_average", "write"]

AGGREGATED = "Aggregated"
REDIRECT_NAME = "/go/[slug]"


def _history(path: Path) -> dict[str, list[dict[str, str]]]:
    rows: dict[str, list[dict[str, str]]] = {}
    if not path.exists():
        return rows
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            rows.setdefault(row["Name"], []).append(row)
    return rows


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # "N/A" before the first answer
        return float("nan")


def _per_second(rows: list[dict[str, str]]) -> list[tuple[int, float, float]]:
    """(time s, requests/s, failures/s) from the running totals of consecutive rows (locust's
    own Requests/s column is a moving average that lags by seconds)."""
    found = []
    for before, row in itertools.pairwise(rows):
        seconds = int(row["Timestamp"]) - int(before["Timestamp"])
        if seconds > 0:
            found.append((int(row["Timestamp"]),
                          (int(row["Total Request Count"]) - int(before["Total Request Count"]))
                          / seconds,
                          (int(row["Total Failure Count"]) - int(before["Total Failure Count"]))
                          / seconds))
    return found


def _charts(out: Path, history: Mapping[str, list[dict[str, str]]],
            summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start_s = summary["start_ms"] / 1000
    charts: list[tuple[str, str]] = []

    def save(fig: Any, name: str, title: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        charts.append((title, name))

    total = history.get(AGGREGATED, [])
    per_s = _per_second(total)
    if per_s:
        t = [at - start_s for at, _, _ in per_s]
        fig, ax = plt.subplots(figsize=(9, 3.2))
        ax.plot(t, [n for _, n, _ in per_s], label="requests/s")
        ax.plot(t, [n for _, _, n in per_s], label="failures/s")
        ax.set_xlabel("seconds since the start")
        ax.set_ylabel("per second")
        ax.legend(loc="upper left")
        ax.grid(alpha=0.3)
        save(fig, "requests.png", "Requests per second (all endpoints)")

    redirect = history.get(REDIRECT_NAME, [])
    if redirect:
        t = [int(r["Timestamp"]) - start_s for r in redirect]
        fig, ax = plt.subplots(figsize=(9, 3.2))
        for column in ("50%", "95%", "99%"):
            ax.plot(t, [_number(r[column]) for r in redirect], label=f"p{column[:-1]}")
        ax.axhline(summary["p99_bound_ms"], color="red", linestyle=":", label="p99 bound")
        ax.set_xlabel("seconds since the start")
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.legend(loc="upper left")
        ax.grid(alpha=0.3)
        save(fig, "latency.png", "Redirect latency percentiles (locust's sliding window)")

    delivered = summary.get("delivered_ms") or []
    if delivered:
        by_second = Counter(int(ms / 1000 - start_s) for ms in delivered)
        seconds = range(0, max(by_second) + 1)
        fig, ax = plt.subplots(figsize=(9, 3.2))
        ax.plot(list(seconds), [by_second.get(s, 0) for s in seconds],
                label="delivered events/s")
        if per_s:
            ax.plot([at - start_s for at, _, _ in per_s], [n for _, n, _ in per_s], alpha=0.5,
                    label="requests/s")
        ax.set_xlabel("seconds since the start")
        ax.set_ylabel("per second")
        ax.legend(loc="upper left")
        ax.grid(alpha=0.3)
        save(fig, "delivered.png", "Events delivered to the fake Graph API per second")
    return charts


def write(out: Path, summary: Mapping[str, Any], context: Mapping[str, Any]) -> Path:
    """Write ``out/report.md`` (and its charts); return its path."""
    history = _history(out / "locust_stats_history.csv")
    charts = _charts(out, history, summary)
    started = datetime.fromtimestamp(summary["start_ms"] / 1000, UTC)
    run_s = (summary["end_ms"] - summary["start_ms"]) / 1000
    lines = [
        f"# Load test: `{summary['shape']}` shape, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"**{'PASSED' if summary['passed'] else 'FAILED'}**"
        + ("" if summary["passed"] else ": " + "; ".join(summary["problems"])),
        "",
        f"- machine: {machine_summary('locust', 'granian', 'dramatiq')}; load average "
        f"{context['load_before']} before, "
        f"{context['load_after']} after (shared machine: figures are the whole stack's on "
        "these cores, with whatever else ran)",
        f"- stack: {context['stack']}"
        + (f", fake Graph API at {context['fake_latency_ms']} ms per request"
           if context.get("fake_latency_ms") is not None else ""),
        f"- load: {summary['requests']:,} requests in {run_s:.1f} s, "
        f"{summary['acknowledged']:,} events acknowledged, {summary['failures']:,} failed "
        "requests",
        f"- redirect p99 over the run: {summary['redirect_p99_ms']} ms "
        f"(bound {summary['p99_bound_ms']:g} ms), as a visitor beside locust saw it "
        f"({summary.get('probe_clicks', 0):,} clicks by loadtest/probe.py); locust's own: "
        f"{summary.get('locust_redirect_p99_ms', summary['redirect_p99_ms'])} ms, which "
        "includes the load generator's scheduling on the same cores",
    ]
    if summary.get("knee"):
        knee = summary["knee"]
        where = ("the last healthy step before the next one failed requests or passed the "
                 "p99 bound" if summary.get("knee_passed") else
                 "the last step, still healthy: no knee found within --max-steps")
        lines.append(f"- ramp knee: {knee['events_s']:,} events/s ({knee['requests_s']:,} "
                     f"requests/s, redirect p99 {knee['redirect_p99_ms']} ms), {where}")
    rec = summary.get("reconciliation")
    if rec:
        last = summary.get("last_delivery_s")
        lines += [
            f"- last event delivered {last:.1f} s after the start" if last is not None
            else "- nothing was delivered",
            "",
            "## Reconciliation",
            "",
            "| acknowledged | accepted by the ledger | delivered | dead (with reason) | "
            "copies at the fake Graph API |",
            "|---:|---:|---:|---:|---:|",
            f"| {rec['acknowledged']:,} | {rec['accepted']:,} | {rec['delivered']:,} | "
            f"{rec['dead']:,} | {rec['at_meta']:,} |",
            "",
            "No problem found: every acknowledged event was delivered exactly once or is dead "
            "with a reason." if rec["passed"] else
            "Problems:\n\n" + "\n".join(f"- {p}" for p in rec["problems"]),
        ]
    if summary.get("ramp_steps"):
        lines += ["", "## Ramp steps", "", "| target events/s | events/s | requests/s | "
                  "failures | redirect p99 ms |", "|---:|---:|---:|---:|---:|"]
        lines += [f"| {s['target_events_s']:,.0f} | {s['events_s']:,} | {s['requests_s']:,} | "
                  f"{s['failures']:,} | {s['redirect_p99_ms']} |" for s in summary["ramp_steps"]]
    for title, name in charts:
        lines += ["", f"## {title}", "", f"![{title}]({name})"]
    lines += ["", "Files: `locust_*.csv` (locust's CSVs, full history), `locust.html` (its "
              "report), `summary.json` (the verdict and figures).", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path

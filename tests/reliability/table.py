"""The reliability table: one row per fault or input class, printed at the end of the run and
kept in ``var/reliability.md``; with ``PIXELRELAY_RELIABILITY_DOCS=1`` also written into
docs/reliability.md between its table markers (that is how the committed table was made)."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from tests.support import ROOT

BEGIN, END = "<!-- reliability-table:begin -->", "<!-- reliability-table:end -->"
HEADER = ("| fault or input class | cases | answered as promised | events sent | delivered "
          "| dead | sent twice | lost | time to recover |\n|---|---:|---:|---:|---:|---:|---:|"
          "---:|---:|")


@dataclass(frozen=True)
class Row:
    what: str
    cases: int
    refused: int | None = None  # bad input: answered with a 4xx and a sentence (or as stated)
    sent: int | None = None  # faults: events the collector acknowledged
    delivered: int | None = None
    dead: int | None = None
    twice: int | None = None
    lost: int | None = None
    recover_s: float | None = None

    def markdown(self) -> str:
        def cell(value: int | float | None) -> str:
            if value is None:
                return "-"
            return f"{value:.1f} s" if isinstance(value, float) else f"{value:,}"

        return (f"| {self.what} | {self.cases:,} | {cell(self.refused)} | {cell(self.sent)} "
                f"| {cell(self.delivered)} | {cell(self.dead)} | {cell(self.twice)} "
                f"| {cell(self.lost)} | {cell(self.recover_s)} |")


ROWS: list[Row] = []


def record(row: Row) -> None:
    ROWS.append(row)


def render(rows: list[Row]) -> str:
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = Path("/proc/loadavg").read_text().split()[:3]
    return "\n".join([f"Run of {today} (load average {' '.join(load)} at the end).", "",
                      HEADER, *(r.markdown() for r in rows)])


def write(rows: list[Row]) -> str:
    table = render(rows)
    out = ROOT / "var" / "reliability.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(table + "\n")
    if os.environ.get("PIXELRELAY_RELIABILITY_DOCS") == "1":
        doc = ROOT / "docs" / "reliability.md"
        text = doc.read_text()
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        doc.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    return table

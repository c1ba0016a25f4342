"""Every metric the project exports (relay and collector), for the tests that check docs, alert
rules and the Grafana board name only real metrics."""

from __future__ import annotations

import re

from prometheus_client.metrics import MetricWrapperBase

from collector.metrics import CollectorMetrics
from relay.metrics import METRICS

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Series Prometheus makes itself for every target.
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})


def exported() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (type, labels) of every metric the relay (``METRICS``) and the collector declare."""
    found = {spec.name: (spec.kind, spec.labels) for spec in METRICS}
    for attribute in vars(CollectorMetrics()).values():
        if isinstance(attribute, MetricWrapperBase):
            suffix = "_total" if attribute._type == "counter" else ""
            found[attribute._name + suffix] = (attribute._type, tuple(attribute._labelnames))
    return found


def series_names() -> frozenset[str]:
    """Every series name a query may use: metric names, plus _bucket/_sum/_count of histograms."""
    names = set(PROMETHEUS_SERIES)
    for name, (kind, _) in exported().items():
        names.add(name)
        if kind == "histogram":
            names.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
    return frozenset(names)


def names_in_query(expr: str) -> set[str]:
    """The series names a PromQL expression reads (identifiers followed by ``{``, ``[`` or
    standing alone, that are not functions, keywords or label names)."""
    without_variables = re.sub(r"\$\{[^}]*\}|\$\w+", "1m", expr)  # Grafana's $__rate_interval
    without_strings = re.sub(r'"[^"]*"', '""', without_variables)
    without_labels = re.sub(r"\{[^}]*\}", "{}", without_strings)
    without_groupings = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)",
                               "", without_labels)
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()", without_groupings))
    keywords = {"and", "or", "unless", "offset", "bool", "inf", "nan", "le"}
    return {w for w in words if w not in keywords}

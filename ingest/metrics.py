"""Ingest metrics: accepted, duplicate and refused counts per source and reason; request latency.

    metrics.latency("/v1/touchpoints").observe(0.004)
    accepted, duplicates = metrics.outcomes("website"); accepted.inc(3)
    metrics.refused("website", "unauthorized").inc()

The accessors keep the labelled children: ``labels()`` takes a lock and builds a key on every call,
which the hot path would otherwise pay several times per request. Label values are bounded (sources
from the config, endpoints, refusal codes), so the caches are too.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from prometheus_client import Counter, Histogram

TOUCHPOINTS = Counter("handoff_ingest_touchpoints_total", "Touchpoints received, by source and outcome",
                      ["source", "outcome"])
REFUSED = Counter("handoff_ingest_refused_total", "Requests refused, by source and reason", ["source", "reason"])
LATENCY = Histogram("handoff_ingest_request_seconds", "Ingest request latency", ["endpoint"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))


@cache
def latency(endpoint: str) -> Any:
    return LATENCY.labels(endpoint)


@cache
def outcomes(source: str) -> tuple[Any, Any]:
    """The (accepted, duplicate) touchpoint counters of ``source``."""
    return TOUCHPOINTS.labels(source, "accepted"), TOUCHPOINTS.labels(source, "duplicate")


@cache
def refused(source: str, reason: str) -> Any:
    return REFUSED.labels(source, reason)

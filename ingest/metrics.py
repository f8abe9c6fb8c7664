"""Ingest metrics: accepted, duplicate and refused counts per source and reason; request latency."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TOUCHPOINTS = Counter("handoff_ingest_touchpoints_total", "Touchpoints received, by source and outcome",
                      ["source", "outcome"])
REFUSED = Counter("handoff_ingest_refused_total", "Requests refused, by source and reason", ["source", "reason"])
LATENCY = Histogram("handoff_ingest_request_seconds", "Ingest request latency", ["endpoint"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))

"""``handoff bench --quick --sections ingest`` runs from a checkout, prints its table and writes the JSON
it promises. No timing assertions: the numbers depend on the machine; their shape does not."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def quick_ingest(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "bench", "--quick", "--sections", "ingest", "--json", str(out)],
        capture_output=True, text=True, timeout=420, cwd=ROOT)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc, json.loads(out.read_text())


def test_it_prints_progress_and_the_table(quick_ingest: tuple[subprocess.CompletedProcess[str], Any]) -> None:
    proc, _ = quick_ingest
    assert "ingest: starting" in proc.stdout
    assert "| section | measurement" in proc.stdout
    assert "single, embedded (SQLite)" in proc.stdout
    assert "taken by the hypervisor (steal)" in proc.stdout  # per measurement, beside the processes' shares


def test_the_json_has_machine_info_and_the_section(quick_ingest: tuple[Any, dict[str, Any]]) -> None:
    _, doc = quick_ingest
    machine = doc["machine"]
    assert isinstance(machine["cpu_count"], int) and machine["cpu_count"] >= 1
    assert machine["python"].startswith("3.")
    for key in ("load_average_start", "load_average_end"):
        assert machine[key] is None or all(_number(x) for x in machine[key])
    for key in ("reference_loop_ms_start", "reference_loop_ms_end"):  # the machine's speed, each end
        assert _number(machine[key]) and machine[key] > 0
    assert _number(machine["steal_cores"]) and machine["steal_cores"] >= 0  # CPU the hypervisor took
    assert doc["quick"] is True
    assert doc["sections"]["ingest"]["status"] == "ok"
    assert set(doc["sections"]) == {"ingest"}


def test_every_measurement_with_a_ceiling_has_a_numeric_ratio(quick_ingest: tuple[Any, dict[str, Any]]) -> None:
    _, doc = quick_ingest
    measurements = doc["measurements"]
    assert measurements and all(m["section"] == "ingest" for m in measurements)
    for m in measurements:
        assert {"name", "value", "unit", "ceiling", "ratio", "lower_is_better", "goal", "met", "runs"} <= set(m)
        if m["value"] is None:
            assert m["note"], f"{m['name']}: no value and no reason"
            continue
        assert _number(m["value"]) and m["value"] > 0, m
        if m["ceiling"] is not None:
            assert _number(m["ratio"]), m
            # 1.0 = at the ceiling: value/ceiling for rates, ceiling/value for costs and latencies
            expected = m["ceiling"] / m["value"] if m["lower_is_better"] else m["value"] / m["ceiling"]
            assert m["ratio"] == pytest.approx(expected, abs=1e-4)  # stored to 4 decimals
        if m["goal"] is not None:
            assert isinstance(m["met"], bool)


def test_the_embedded_ratios_are_measured_and_split_is_measured_or_explained(
        quick_ingest: tuple[Any, dict[str, Any]]) -> None:
    _, doc = quick_ingest
    by_name = {m["name"]: m for m in doc["measurements"]}
    single = by_name["single, embedded (SQLite)"]
    assert _number(single["ratio"]) and single["goal"]["on"] == "ratio" and single["goal"]["threshold"] == 0.5
    assert _number(by_name["batch of 500, embedded (SQLite)"]["value"])
    split = by_name["single, split (Kafka + PostgreSQL)"]
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        assert _number(split["ratio"]), f"CI must have a broker and PostgreSQL: {split['note']}"
    else:
        assert _number(split["ratio"]) or split["note"]

"""Measurements, goals, the printed table and the JSON file.

    m = Measurement("ingest", "single, embedded", 5210.0, "req/s", ceiling=9800.0, ceiling_name="bare FastAPI",
                    goal=Goal("ratio", ">=", 0.5))
    m.ratio, m.met              # 0.5316..., True
    print(render_table([m]))

A goal is on the value or on the ratio to the ceiling measured in the same run; ``met`` is None when
the measurement has no goal (or could not be taken).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class Goal:
    on: Literal["value", "ratio"]
    op: Literal[">=", "<"]
    threshold: float

    def holds(self, value: float) -> bool:
        return value >= self.threshold if self.op == ">=" else value < self.threshold

    def __str__(self) -> str:
        what = "ratio" if self.on == "ratio" else "value"
        return f"{what} {self.op} {fmt_number(self.threshold)}"


@dataclass
class Measurement:
    section: str
    name: str
    value: float | None
    unit: str
    ceiling: float | None = None
    ceiling_name: str | None = None
    goal: Goal | None = None
    runs: list[float] = field(default_factory=list)  # every run's value (the value is their median)
    ceiling_runs: list[float] = field(default_factory=list)
    note: str = ""  # e.g. why it was skipped
    raw: dict[str, Any] = field(default_factory=dict)
    lower_is_better: bool = False  # latencies: the ceiling is a floor, the ratio is ceiling / value

    @property
    def ratio(self) -> float | None:
        """How close to the ceiling: 1.0 = as good as the stack allows (value/ceiling for rates,
        ceiling/value for latencies)."""
        if self.value is None or not self.ceiling:
            return None
        if self.lower_is_better:
            return self.ceiling / self.value if self.value else None
        return self.value / self.ceiling

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        subject = self.ratio if self.goal.on == "ratio" else self.value
        return None if subject is None else self.goal.holds(subject)

    def as_json(self) -> dict[str, Any]:
        return {
            "section": self.section, "name": self.name, "value": self.value, "unit": self.unit,
            "ceiling": self.ceiling, "ceiling_name": self.ceiling_name,
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "goal": None if self.goal is None else {"on": self.goal.on, "op": self.goal.op,
                                                    "threshold": self.goal.threshold, "text": str(self.goal)},
            "lower_is_better": self.lower_is_better, "met": self.met, "runs": self.runs,
            "ceiling_runs": self.ceiling_runs, "note": self.note,
            "raw": self.raw,
        }


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (``fraction`` 0.99 -> p99); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
    return ordered[rank - 1]


def fmt_number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value)}"


def fmt_with_unit(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{fmt_number(value)} {unit}"


def render_table(measurements: Sequence[Measurement]) -> str:
    """A Markdown table (readable in a terminal, pasteable into the README)."""
    header = ["section", "measurement", "value", "ceiling", "ratio", "goal", "met?"]
    rows = []
    for m in measurements:
        ceiling = fmt_with_unit(m.ceiling, m.unit)
        if m.ceiling is not None and m.ceiling_name:
            ceiling += f" ({m.ceiling_name})"
        value = fmt_with_unit(m.value, m.unit) if m.value is not None else _short(m.note) or "-"
        met = {True: "yes", False: "NO", None: "-"}[m.met]
        rows.append([m.section, m.name, value, ceiling, "-" if m.ratio is None else f"{m.ratio:.2f}",
                     "-" if m.goal is None else str(m.goal), met])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, rule, *body])


def _short(note: str, limit: int = 70) -> str:
    """One line of a note for the table (the JSON keeps all of it)."""
    line = note.strip().splitlines()[0] if note.strip() else ""
    if not line:
        return ""
    line = line if line.startswith("error") else f"skipped: {line}"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
        "implementation": platform.python_implementation(), "platform": platform.platform(),
        "machine": platform.machine(),
    }
    try:
        info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in
                                 Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        info["memory_total_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    return info


def reference_loop_ms(rounds: int = 5) -> float:
    """Milliseconds this machine takes for one fixed pure-Python loop (``sum(range(1_000_000))``), the
    fastest of ``rounds``: how fast the machine is right now. A virtual machine's speed drifts (the
    same code measured half as fast an hour later); this figure, taken at the start and the end of a
    run, says which phase the run's numbers come from."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        sum(range(1_000_000))
        best = min(best, time.perf_counter() - start)
    return round(best * 1000, 1)


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


class Progress:
    """One line per step, prefixed with the time since the start: ``[  12.3s] ingest: ...``."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self, section: str, message: str) -> None:
        print(f"[{time.monotonic() - self.start:7.1f}s] {section}: {message}", flush=True)

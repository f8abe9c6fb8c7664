"""What every section gets: the options, progress output, a work folder, shared infrastructure, and
the list the measurements go into."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.bench.infra import PgServer, Unavailable
from services.bench.results import Goal, Measurement, Progress


@dataclass
class BenchContext:
    quick: bool
    workdir: Path
    progress: Progress = field(default_factory=Progress)
    measurements: list[Measurement] = field(default_factory=list)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-section raw figures
    _pg: PgServer | None = None
    _pg_problem: str | None = None

    @property
    def runs(self) -> int:
        """Runs per measurement: the reported value is their median."""
        return 1 if self.quick else 3

    @property
    def duration(self) -> float:
        """Seconds of each throughput window."""
        return 2.0 if self.quick else 10.0

    @property
    def warmup(self) -> float:
        return 0.5 if self.quick else 1.5

    def tag(self) -> str:
        return uuid.uuid4().hex[:8]

    def say(self, section: str, message: str) -> None:
        self.progress(section, message)

    def add(self, measurement: Measurement) -> Measurement:
        self.measurements.append(measurement)
        return measurement

    def skip(self, section: str, name: str, unit: str, reason: str, goal: Goal | None = None) -> None:
        self.say(section, f"skipping {name}: {reason}")
        self.add(Measurement(section, name, None, unit, goal=goal, note=reason))

    def raw(self, section: str) -> dict[str, Any]:
        return self.sections.setdefault(section, {})

    async def pg(self) -> PgServer:
        """The PostgreSQL server (connected once); raises :class:`Unavailable` with the reason."""
        if self._pg is None:
            if self._pg_problem is not None:
                raise Unavailable(self._pg_problem)
            try:
                self._pg = await PgServer.connect()
            except Unavailable as exc:
                self._pg_problem = str(exc)
                raise
        return self._pg

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.drop_all()

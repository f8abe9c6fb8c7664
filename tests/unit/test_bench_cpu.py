"""The bench's reading of /proc/stat: busy time apart from the time the hypervisor took (steal)."""

from __future__ import annotations

import time

import pytest

from services.bench.procs import STEAL, CpuMeter, cpu_times


def test_busy_is_user_nice_system_irq_softirq_and_steal_is_apart() -> None:
    #          user nice system idle iowait irq softirq steal guest guest_nice
    line = "cpu  100  5    20     900  7      1   2       30    0     0\ncpu0 50 2 10 450 3 0 1 15 0 0\n"
    assert cpu_times(line, 100) == pytest.approx((1.28, 0.30))


def test_a_kernel_without_the_steal_column_reports_none() -> None:
    assert cpu_times("cpu  10 0 10 100 0 0 0\n", 10) == pytest.approx((2.0, 0.0))


class _Readings(CpuMeter):
    """A meter fed with given readings (start, then stop) instead of /proc."""

    def __init__(self, *readings: dict[str, float]) -> None:
        super().__init__({"server": 0})
        self.readings = list(readings)

    def _read(self) -> dict[str, float]:
        return self.readings.pop(0)


def test_steal_is_reported_beside_the_shares_and_is_not_counted_as_other_processes() -> None:
    zero = {"server": 0.0, "bench (load generator)": 0.0, "machine (all processes)": 0.0, STEAL: 0.0}
    meter = _Readings(zero, {"server": 1.0, "bench (load generator)": 0.5, "machine (all processes)": 2.0, STEAL: 0.4})
    meter.start()
    meter._t0 = time.monotonic() - 10.0  # ten seconds measured
    shares = meter.stop()
    assert shares[STEAL] == pytest.approx(0.04, abs=0.001)
    assert shares["server"] == pytest.approx(0.10, abs=0.001)
    assert shares["others on this machine"] == pytest.approx(0.05, abs=0.001)  # 0.20 busy - 0.15 ours

"""The e2e bench's verdict on a rate: sustainable only when the pipeline kept up with bounded latency."""

from __future__ import annotations

from services.bench.pipeline import MAX_MEDIAN_MS, RatePoint, judge


def _point(**fields: float) -> RatePoint:
    return RatePoint(**{"rate": 1_000.0, "seconds": 20.0, "achieved": 1_000.0, "leads": 100, "pushed": 100,
                        "tail_s": 0.3, **fields})  # type: ignore[arg-type]


def test_steady_latency_is_sustainable() -> None:
    assert judge(_point(), [150.0] * 100) == (True, "kept up")


def test_a_latency_that_grows_during_the_run_is_a_backlog() -> None:
    ok, reason = judge(_point(), [150.0] * 50 + [900.0] * 50)
    assert not ok and "grew from 150 ms to 900 ms" in reason


def test_a_median_of_seconds_from_the_start_is_a_backlog_even_when_it_does_not_grow() -> None:
    ok, reason = judge(_point(tail_s=1.0), [3_000.0] * 100)
    assert not ok and "from the start" in reason
    assert judge(_point(), [MAX_MEDIAN_MS - 1] * 100)[0]  # just under the bound: kept up


def test_a_rate_not_sent_or_not_pushed_is_not_sustainable() -> None:
    assert judge(_point(achieved=900.0), [100.0] * 10)[1].startswith("ingest fell behind")
    assert judge(_point(pushed=90), [100.0] * 10)[1].startswith("only 90 of 100")
    assert judge(_point(non_2xx=1), [100.0] * 10)[1].startswith("1 non-2xx")

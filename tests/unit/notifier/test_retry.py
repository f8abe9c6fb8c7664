"""Delivery policy: classification, backoff with jitter, Retry-After, decisions, circuit breaker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.retry import CircuitBreaker, RetryPolicy, classify, decide, parse_retry_after

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "error", "verdict"),
    [
        (200, None, "delivered"),
        (201, None, "delivered"),
        (204, None, "delivered"),
        (500, "boom", "retry"),
        (502, None, "retry"),
        (503, None, "retry"),
        (429, None, "retry"),
        (408, None, "retry"),
        (400, "bad", "dead"),
        (401, None, "dead"),
        (404, None, "dead"),
        (409, None, "dead"),
        (422, None, "dead"),
        (301, None, "dead"),
        (None, "timeout: ReadTimeout: timed out", "retry"),
        (None, "connection: ConnectError: refused", "retry"),
        (None, None, "retry"),
        (None, "permanent: UnsupportedProtocol: no scheme", "dead"),
    ],
)
def test_classify(status: int | None, error: str | None, verdict: str) -> None:
    assert classify(status, error) == verdict


@given(st.integers(100, 599))
def test_classify_covers_every_status(status: int) -> None:
    verdict = classify(status, None)
    expected = "delivered" if 200 <= status < 300 else "retry" if status >= 500 or status in (408, 429) else "dead"
    assert verdict == expected


def test_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("120", NOW) == timedelta(seconds=120)
    assert parse_retry_after(" 0 ", NOW) == timedelta(0)
    assert parse_retry_after("1.5", NOW) == timedelta(seconds=1.5)
    assert parse_retry_after("Sun, 22 Nov 2026 10:00:30 GMT", NOW) == timedelta(seconds=30)
    assert parse_retry_after("Sun, 22 Nov 2026 09:00:00 GMT", NOW) == timedelta(0)  # past: now
    naive_now = NOW.replace(tzinfo=None)
    assert parse_retry_after("Sun, 22 Nov 2026 10:01:00 GMT", naive_now) == timedelta(minutes=1)


@pytest.mark.parametrize("garbage", [None, "", "  ", "-5", "soon", "1e3", "Sun, 99 Foo 2026", "١٢", "9" * 40, "inf"])
def test_retry_after_garbage_is_none(garbage: str | None) -> None:
    assert parse_retry_after(garbage, NOW) is None


@settings(max_examples=500)
@given(st.text())
def test_retry_after_never_raises(value: str) -> None:
    result = parse_retry_after(value, NOW)
    assert result is None or result >= timedelta(0)


@given(st.integers(0, 10**6))
def test_retry_after_round_trips_seconds(seconds: int) -> None:
    assert parse_retry_after(str(seconds), NOW) == timedelta(seconds=seconds)


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(jitter="full")
    assert [policy.ceiling(n) for n in (1, 2, 3, 4)] == [timedelta(seconds=s) for s in (1, 2, 4, 8)]
    assert policy.ceiling(10) == timedelta(seconds=512)
    assert policy.ceiling(11) == timedelta(minutes=10)
    assert policy.ceiling(10**6) == timedelta(minutes=10)  # no overflow
    assert policy.next_delay(3, 0.0) == timedelta(0)
    assert policy.next_delay(3, 0.5) == timedelta(seconds=2)
    equal = RetryPolicy()
    assert equal.next_delay(3, 0.0) == timedelta(seconds=2)
    assert equal.next_delay(3, 0.999999) <= timedelta(seconds=4)


@given(
    st.integers(1, 60),
    st.floats(0, 1, exclude_max=True),
    st.floats(0, 1, exclude_max=True),
    st.sampled_from(["full", "equal"]),
)
def test_jittered_delay_stays_in_its_band_and_is_monotonic_in_jitter(
    attempt: int, j1: float, j2: float, mode: str
) -> None:
    policy = RetryPolicy(jitter=mode)  # type: ignore[arg-type]
    ceiling = policy.ceiling(attempt)
    low = timedelta(0) if mode == "full" else ceiling / 2
    for jitter in (j1, j2):
        assert low <= policy.next_delay(attempt, jitter) <= ceiling <= policy.max_delay
    lo, hi = sorted((j1, j2))
    assert policy.next_delay(attempt, lo) <= policy.next_delay(attempt, hi)
    assert policy.ceiling(attempt) <= policy.ceiling(attempt + 1)


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="base > 0"):
        RetryPolicy(base=timedelta(0))
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_decide() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert decide(policy, 1, 200, None, None, NOW, 0.5).verdict == "delivered"
    dead = decide(policy, 1, 400, "missing field email", None, NOW, 0.5)
    assert (dead.verdict, dead.retry_at) == ("dead", None)
    assert "400" in dead.reason and "missing field email" in dead.reason
    retry = decide(policy, 1, 503, None, None, NOW, 0.0)
    assert retry.verdict == "retry" and retry.retry_at == NOW + timedelta(seconds=0.5)
    # 429 with Retry-After: never sooner than asked.
    limited = decide(policy, 1, 429, None, "30", NOW, 0.0)
    assert limited.retry_at == NOW + timedelta(seconds=30)
    # Retry-After shorter than the backoff: the backoff wins.
    assert decide(policy, 2, 429, None, "0", NOW, 0.999).retry_at == NOW + policy.next_delay(2, 0.999)
    # Absurd Retry-After is clamped.
    assert decide(policy, 1, 429, None, "99999999", NOW, 0.0).retry_at == NOW + timedelta(hours=1)
    gave_up = decide(policy, 3, None, "timeout: ReadTimeout", None, NOW, 0.5)
    assert gave_up.verdict == "dead" and "gave up after 3" in gave_up.reason


def test_breaker_opens_after_consecutive_failures_then_half_opens_for_one_trial() -> None:
    breaker = CircuitBreaker(threshold=3, cool_down=timedelta(seconds=30))
    t = NOW
    breaker = breaker.record(False, t).record(False, t)
    assert breaker.allows(t) and breaker.state(t) == "closed"
    breaker = breaker.record(True, t)  # success resets the count
    for _ in range(3):
        breaker = breaker.record(False, t)
    assert breaker.state(t) == "open" and not breaker.allows(t + timedelta(seconds=29))
    assert breaker.opens_until() == t + timedelta(seconds=30)
    half = t + timedelta(seconds=30)
    assert breaker.state(half) == "half_open" and breaker.allows(half)
    trial = breaker.trial_started(half)
    assert not trial.allows(half + timedelta(seconds=1))  # only one trial at a time
    assert trial.allows(half + timedelta(seconds=30))  # a trial that never reported back stops blocking
    # The trial fails: open again for a full cool-down from now.
    reopened = trial.record(False, half + timedelta(seconds=2))
    assert reopened.state(half + timedelta(seconds=31)) == "open"
    assert reopened.allows(half + timedelta(seconds=32))
    # The trial succeeds: closed.
    closed = trial.record(True, half + timedelta(seconds=2))
    assert closed.state(half) == "closed" and closed.failures == 0 and closed.allows(half)


def test_breaker_ignores_stragglers_while_open_and_trial_start_when_closed() -> None:
    breaker = CircuitBreaker(threshold=1, cool_down=timedelta(seconds=10)).record(False, NOW)
    later = breaker.record(False, NOW + timedelta(seconds=5))
    assert later.opened_at == NOW  # a late failure does not extend the cool-down
    assert CircuitBreaker().trial_started(NOW) == CircuitBreaker()


@settings(max_examples=200)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 20)), max_size=40))
def test_breaker_invariants(events: list[tuple[bool, int]]) -> None:
    breaker = CircuitBreaker(threshold=3, cool_down=timedelta(seconds=10))
    now = NOW
    streak = 0
    for success, gap in events:
        now += timedelta(seconds=gap)
        if breaker.allows(now):
            breaker = breaker.trial_started(now)
        breaker = breaker.record(success, now)
        streak = 0 if success else streak + 1
        if success:
            assert breaker.state(now) == "closed" and breaker.allows(now)
        if streak >= 3:
            assert breaker.state(now) in ("open", "half_open") and breaker.opened_at is not None
        assert breaker.failures == streak

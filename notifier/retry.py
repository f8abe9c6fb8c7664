"""Delivery policy for outbound calls: classify an answer, back off, honour Retry-After, break circuits.

All pure; the randomness of jitter and the current time are parameters::

    policy = RetryPolicy(max_attempts=crm.max_attempts)
    outcome = decide(policy, attempt=3, status=503, error=None, retry_after=None, now=now, jitter=rng.random())
    outcome.verdict, outcome.retry_at   # "retry", now + 2 s .. 4 s (equal jitter around 4 s)

    breaker = CircuitBreaker()
    if breaker.allows(now):
        breaker = breaker.trial_started(now)   # only matters when half-open; harmless otherwise
        ...send...
        breaker = breaker.record(success=outcome.verdict != "retry", now=now)

Rules (contract section 5): 2xx is delivered; 5xx, 408, 429, timeouts and connection errors are
retried with exponential backoff and jitter, never sooner than a ``Retry-After`` asks; any other
status (4xx, and 3xx which we do not follow) goes to the dead-letter store at once, as does a request
that can never be sent (an ``error`` starting with ``"permanent:"``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Literal

Verdict = Literal["delivered", "retry", "dead"]
CircuitState = Literal["closed", "open", "half_open"]

PERMANENT_ERROR_PREFIX = "permanent:"
RETRYABLE_STATUSES = frozenset({408, 429})
_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,6})?")


def classify(status: int | None, error: str | None) -> Verdict:
    """What one answer means: ``status`` is the HTTP status (``None`` when none came back)."""
    if status is None:
        if error is not None and error.startswith(PERMANENT_ERROR_PREFIX):
            return "dead"
        return "retry"  # timeout, refused or reset connection, DNS failure: the receiver may recover
    if 200 <= status < 300:
        return "delivered"
    if status >= 500 or status in RETRYABLE_STATUSES:
        return "retry"
    return "dead"


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """The wait a ``Retry-After`` header asks for: delay-seconds or an HTTP-date; ``None`` if unusable.

    A date in the past means "now" (zero). Garbage, negative numbers and absurdly large values give
    ``None``; this never raises.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _SECONDS.fullmatch(text):
        # RFC 9110 says whole seconds; a decimal is tolerated because some servers send one.
        try:
            return timedelta(seconds=float(text))
        except OverflowError:
            return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError, AttributeError):
        return None
    if when is None:  # older Pythons returned None instead of raising
        return None  # pragma: no cover
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # RFC 9110 dates are GMT
    reference = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    try:
        wait = when - reference
    except OverflowError:  # pragma: no cover - datetimes are bounded, the difference is not
        return None
    return max(wait, timedelta(0))


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: attempt ``n`` failed -> wait about ``base * factor**(n-1)``, capped.

    ``jitter="equal"`` waits between half and all of that (never hammers, still spreads a herd);
    ``"full"`` waits anywhere between zero and all of it.
    """

    base: timedelta = timedelta(seconds=1)
    factor: float = 2.0
    max_delay: timedelta = timedelta(minutes=10)
    max_attempts: int = 12
    jitter: Literal["full", "equal"] = "equal"
    max_retry_after: timedelta = timedelta(hours=1)  # a Retry-After beyond this is clamped

    def __post_init__(self) -> None:
        if self.base <= timedelta(0) or self.factor < 1 or self.max_delay < self.base:
            raise ValueError("RetryPolicy needs base > 0, factor >= 1 and max_delay >= base")
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")

    def ceiling(self, attempt: int) -> timedelta:
        """The un-jittered delay after failed attempt number ``attempt`` (1-based)."""
        exponent = max(attempt, 1) - 1
        # Compare in logarithms first so a large attempt number cannot overflow the float.
        if exponent * math.log(self.factor) >= math.log(self.max_delay / self.base):
            return self.max_delay
        return min(self.base * (self.factor**exponent), self.max_delay)

    def next_delay(self, attempt: int, jitter: float) -> timedelta:
        """Delay after failed attempt ``attempt`` (1-based); ``jitter`` is a uniform draw in [0, 1)."""
        share = min(max(jitter, 0.0), 1.0)
        ceiling = self.ceiling(attempt)
        if self.jitter == "full":
            return ceiling * share
        return ceiling / 2 + (ceiling / 2) * share

    def delay(self, attempt: int, jitter: float, retry_after: timedelta | None = None) -> timedelta:
        """The backoff delay, but never sooner than the receiver's ``Retry-After`` (clamped)."""
        backoff = self.next_delay(attempt, jitter)
        if retry_after is None:
            return backoff
        return max(backoff, min(retry_after, self.max_retry_after))

    def exhausted(self, attempt: int) -> bool:
        """True once ``attempt`` attempts have been made and failed: no more retries."""
        return attempt >= self.max_attempts


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    retry_at: datetime | None  # set only when verdict == "retry"
    reason: str  # for the delivery row / dead letter: what happened, in words


def describe(status: int | None, error: str | None) -> str:
    if status is None:
        return error or "no answer"
    return f"HTTP {status}" + (f": {error}" if error else "")


def decide(
    policy: RetryPolicy,
    attempt: int,
    status: int | None,
    error: str | None,
    retry_after: str | None,
    now: datetime,
    jitter: float,
) -> Outcome:
    """What to do after attempt number ``attempt`` (1-based) ended with ``status``/``error``."""
    verdict = classify(status, error)
    what = describe(status, error)
    if verdict == "delivered":
        return Outcome("delivered", None, what)
    if verdict == "dead":
        return Outcome("dead", None, f"{what} (not retryable)")
    if policy.exhausted(attempt):
        return Outcome("dead", None, f"{what}; gave up after {attempt} attempt(s)")
    wait = policy.delay(attempt, jitter, parse_retry_after(retry_after, now))
    return Outcome("retry", now + wait, f"{what}; retry {attempt + 1} of {policy.max_attempts} in {wait}")


@dataclass(frozen=True)
class CircuitBreaker:
    """Per-CRM breaker: open after ``threshold`` consecutive failures, for ``cool_down``; then half-open.

    Half-open lets exactly one trial through (:meth:`trial_started` marks it); its success closes the
    breaker, its failure opens it for another ``cool_down``. A trial that never reports back (the
    process died) stops blocking after one more ``cool_down``.
    """

    threshold: int = 5
    cool_down: timedelta = timedelta(seconds=30)
    failures: int = 0  # consecutive
    opened_at: datetime | None = None
    trial_at: datetime | None = None

    def state(self, now: datetime) -> CircuitState:
        if self.opened_at is None:
            return "closed"
        return "open" if now < self.opened_at + self.cool_down else "half_open"

    def allows(self, now: datetime) -> bool:
        state = self.state(now)
        if state == "closed":
            return True
        if state == "open":
            return False
        return self.trial_at is None or now >= self.trial_at + self.cool_down

    def trial_started(self, now: datetime) -> CircuitBreaker:
        """Record that a call goes out now; in half-open state that call is the one trial."""
        return replace(self, trial_at=now) if self.state(now) == "half_open" else self

    def record(self, success: bool, now: datetime) -> CircuitBreaker:
        """Fold in one call's result. Count only failures that say the CRM is unwell (verdict "retry")."""
        if success:
            return replace(self, failures=0, opened_at=None, trial_at=None)
        failures = self.failures + 1
        state = self.state(now)
        if state == "half_open":
            return replace(self, failures=failures, opened_at=now, trial_at=None)
        if state == "open":
            return replace(self, failures=failures)  # stragglers sent before it opened
        if failures >= self.threshold:
            return replace(self, failures=failures, opened_at=now, trial_at=None)
        return replace(self, failures=failures)

    def opens_until(self) -> datetime | None:
        """When the cool-down ends (the earliest retry time for queued deliveries), if open."""
        return None if self.opened_at is None else self.opened_at + self.cool_down

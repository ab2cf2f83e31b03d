"""When to try a delivery again, and when to give up: pure, so every rule is testable without a clock.

Retried: network errors, timeouts, 408, 429 (after its Retry-After), 5xx, and 3xx (redirects are not
followed: a receiver that moved must be re-registered). Any other 4xx is final: the receiver said the
request itself is wrong, and sending it again cannot help (GOWA #432 retried 404s forever).
"""

from __future__ import annotations

import email.utils
import enum

import attrs

RETRYABLE_4XX = frozenset({408, 429})


class Verdict(enum.StrEnum):
    OK = "ok"
    RETRY = "failed"  # the stored status of a delivery waiting for its next attempt
    DEAD = "dead"


@attrs.frozen
class Answered:
    status: int
    retry_after: float | None = None  # seconds, already parsed and capped


@attrs.frozen
class Unreachable:
    """No HTTP answer: refused, reset, DNS, TLS, or no answer within the timeout."""

    error: str


Outcome = Answered | Unreachable


@attrs.frozen
class RetryPolicy:
    delays: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0)
    repeat: float = 7200.0  # after the listed delays, every this long
    max_age: float = 86400.0  # no attempt later than this after the first one; then dead
    jitter: float = 0.15  # each delay is scaled by 1 ± this, so retries of many deliveries spread out
    retry_after_cap: float = 3600.0
    min_delay: float = 1.0  # even after "Retry-After: 0"

    def delay(self, failures: int) -> float:
        """Base delay after the `failures`-th failed attempt (1-based), before jitter."""
        return self.delays[failures - 1] if failures <= len(self.delays) else self.repeat


@attrs.frozen
class Decision:
    verdict: Verdict
    next_attempt_at: float | None = None  # unix time, for RETRY
    error: str | None = None  # short, for the deliveries list


def verdict(outcome: Outcome) -> Verdict:
    if isinstance(outcome, Unreachable):
        return Verdict.RETRY
    if 200 <= outcome.status < 300:
        return Verdict.OK
    if 400 <= outcome.status < 500 and outcome.status not in RETRYABLE_4XX:
        return Verdict.DEAD
    return Verdict.RETRY


def decide(
    policy: RetryPolicy, outcome: Outcome, failures: int, first_attempt_at: float, now: float, spread: float
) -> Decision:
    """What to do after an attempt at `now`; `failures` counts this one, `spread` is uniform in [-1, 1]."""
    kind = verdict(outcome)
    error = _describe(outcome)
    if kind is not Verdict.RETRY:
        return Decision(kind, error=error)
    if isinstance(outcome, Answered) and outcome.retry_after is not None:
        wait = outcome.retry_after  # the receiver said when; no jitter on its own word
    else:
        wait = policy.delay(failures) * (1 + policy.jitter * spread)
    at = now + max(wait, policy.min_delay)
    if at > first_attempt_at + policy.max_age:
        return Decision(Verdict.DEAD, error=f"{error}; gave up after {failures} attempt(s)")
    return Decision(Verdict.RETRY, next_attempt_at=at, error=error)


def _describe(outcome: Outcome) -> str | None:
    if isinstance(outcome, Unreachable):
        return outcome.error
    if 200 <= outcome.status < 300:
        return None
    if 300 <= outcome.status < 400:
        return f"HTTP {outcome.status} (redirects are not followed)"
    return f"HTTP {outcome.status}"


def retry_after(value: str | None, now: float, cap: float) -> float | None:
    """Seconds from a Retry-After header (delay-seconds or an HTTP-date), capped; None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # HTTP-dates are GMT
            return None
        seconds = when.timestamp() - now
    return min(max(seconds, 0.0), cap)

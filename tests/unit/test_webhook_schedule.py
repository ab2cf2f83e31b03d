"""The retry policy as pure arithmetic: which answers are retried, when, and when a delivery is dead."""

from __future__ import annotations

import email.utils

import pytest

from waservice.webhooks.schedule import (
    Answered,
    RetryPolicy,
    Unreachable,
    Verdict,
    decide,
    retry_after,
    verdict,
)

T0 = 1_800_000_000.0


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (Answered(200), Verdict.OK),
        (Answered(204), Verdict.OK),
        (Answered(301), Verdict.RETRY),  # redirects are not followed
        (Answered(400), Verdict.DEAD),
        (Answered(404), Verdict.DEAD),
        (Answered(410), Verdict.DEAD),
        (Answered(408), Verdict.RETRY),
        (Answered(429), Verdict.RETRY),
        (Answered(500), Verdict.RETRY),
        (Answered(503), Verdict.RETRY),
        (Unreachable("refused"), Verdict.RETRY),
    ],
)
def test_what_is_retried(outcome, expected):
    assert verdict(outcome) is expected


def test_the_default_schedule_then_every_two_hours_until_a_day_is_over():
    policy = RetryPolicy()
    now, at = T0, []
    for failures in range(1, 100):
        decision = decide(policy, Answered(503), failures, T0, now, spread=0.0)
        if decision.verdict is Verdict.DEAD:
            break
        now = decision.next_attempt_at
        at.append(now - T0)
    waits = [b - a for a, b in zip([0.0, *at], at, strict=False)]
    assert waits[:6] == [5, 30, 120, 600, 1800, 3600]
    assert set(waits[6:]) == {7200}
    assert at[-1] <= 86400 < at[-1] + 7200
    assert "gave up after" in decision.error


def test_jitter_stays_within_its_bounds():
    policy = RetryPolicy(jitter=0.15)
    low = decide(policy, Unreachable("x"), 2, T0, T0, spread=-1.0).next_attempt_at - T0
    high = decide(policy, Unreachable("x"), 2, T0, T0, spread=1.0).next_attempt_at - T0
    assert low == pytest.approx(25.5) and high == pytest.approx(34.5)


def test_retry_after_replaces_the_schedule():
    decision = decide(RetryPolicy(), Answered(429, retry_after=42.0), 1, T0, T0, spread=1.0)
    assert decision.verdict is Verdict.RETRY and decision.next_attempt_at == T0 + 42


def test_retry_after_in_seconds_or_as_an_http_date_capped():
    assert retry_after("120", T0, 3600) == 120
    assert retry_after("99999", T0, 3600) == 3600
    assert retry_after(email.utils.formatdate(T0 + 90, usegmt=True), T0, 3600) == 90
    assert retry_after(email.utils.formatdate(T0 - 90, usegmt=True), T0, 3600) == 0
    assert retry_after("soon", T0, 3600) is None
    assert retry_after(None, T0, 3600) is None

"""Pure rules: job ids, retry delays, failure decisions."""

from __future__ import annotations

import random

import pytest

from settler_jobs.domain import (
    JobState,
    RetryPolicy,
    failure_reason,
    idempotent_job_id,
    new_job_id,
    retry_after_s,
    retry_delay_s,
    validate_tenant_id,
)
from settler_jobs.errors import JobCancelled, PermanentFailure, RetryLater


def test_idempotent_ids_are_stable_and_namespaced_by_tenant_and_kind() -> None:
    a = idempotent_job_id("t1", "email-sending", "k")
    assert a == idempotent_job_id("t1", "email-sending", "k")
    assert a != idempotent_job_id("t2", "email-sending", "k")
    assert a != idempotent_job_id("t1", "export-generation", "k")
    # A key that smuggles separators cannot forge another tenant's id.
    assert idempotent_job_id("t1", "k", "a\x00b") != idempotent_job_id("t1\x00k", "a", "b")


@pytest.mark.parametrize("job_id", [idempotent_job_id("t", "k", "1"), new_job_id(), new_job_id()])
def test_ids_obey_bullmq_rules(job_id: str) -> None:
    assert ":" not in job_id
    assert not job_id.isdigit()
    assert job_id[0].isalpha()


def test_idempotency_key_length_is_bounded() -> None:
    with pytest.raises(ValueError, match="1-255"):
        idempotent_job_id("t", "k", "")
    with pytest.raises(ValueError, match="1-255"):
        idempotent_job_id("t", "k", "x" * 256)


@pytest.mark.parametrize("bad", ["", "a:b", "a b", "-x", "x" * 65, "t\n1", "ü"])
def test_tenant_ids_are_validated(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid tenant id"):
        validate_tenant_id(bad)


class _Fixed(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("attempt", "draw", "expected"),
    [(1, 0.0, 2.0), (2, 0.0, 4.0), (3, 0.0, 8.0), (1, 0.999, 2.0 - 0.999), (12, 0.0, 60.0)],
)
def test_retry_delay_is_exponential_capped_and_jittered(
    attempt: int, draw: float, expected: float
) -> None:
    policy = RetryPolicy(attempts=20, base_delay_s=2, max_delay_s=60, jitter=0.5)
    assert retry_delay_s(policy, attempt, _Fixed(draw)) == pytest.approx(expected)


def test_jitter_spreads_delays_but_never_exceeds_the_curve() -> None:
    policy = RetryPolicy(attempts=5, base_delay_s=2, jitter=0.5)
    rng = random.Random(7)
    delays = [retry_delay_s(policy, 2, rng) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays)
    assert len({round(d, 3) for d in delays}) > 50


def test_failure_decisions() -> None:
    policy = RetryPolicy(attempts=3, base_delay_s=1, jitter=0)
    rng = random.Random(1)
    assert retry_after_s(RuntimeError("x"), 1, 3, policy, rng) == 1.0
    assert retry_after_s(RuntimeError("x"), 3, 3, policy, rng) is None
    assert retry_after_s(PermanentFailure("no"), 1, 3, policy, rng) is None
    assert retry_after_s(JobCancelled(), 1, 3, policy, rng) is None
    assert retry_after_s(RetryLater(30), 1, 3, policy, rng) == 30
    assert retry_after_s(RetryLater(10**9), 1, 3, policy, rng) == policy.max_delay_s


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=2)


def test_failure_reason_and_states() -> None:
    assert failure_reason(ValueError("bad")) == "ValueError: bad"
    assert failure_reason(TimeoutError()) == "TimeoutError"
    assert JobState.from_bullmq("prioritized") is JobState.WAITING
    assert JobState.from_bullmq("weird") is JobState.UNKNOWN

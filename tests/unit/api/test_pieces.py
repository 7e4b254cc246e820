"""Pure pieces of the API: key format, rate-limit settings, heartbeat records."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from settler_jobs.config import Settings
from settler_jobs.heartbeat import WorkerInfo, heartbeat_key, workers_pattern
from settler_jobs.tenants.directory import KEY_PREFIX, split_key


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (f"{KEY_PREFIX}abc123_s3cr_et-x", ("abc123", "s3cr_et-x")),
        (f"{KEY_PREFIX}abc123_", None),
        (f"{KEY_PREFIX}abc123", None),
        (f"{KEY_PREFIX}_secret", None),
        (f"{KEY_PREFIX}ab-c_secret", None),
        ("sk_test_abc_secret", None),
        ("", None),
        (f"{KEY_PREFIX}abc_" + "x" * 300, None),
    ],
)
def test_split_key(token: str, expected: tuple[str, str] | None) -> None:
    assert split_key(token) == expected


def test_rate_limits_are_keyed_by_tier_and_accept_aliases() -> None:
    settings = Settings(api_rate_limits={"pro": 7, "FREE": 1})
    assert settings.api_rate_limits == {"growth": 7.0, "free": 1.0}
    with pytest.raises(ValidationError, match="unknown tier"):
        Settings(api_rate_limits={"gold": 1})
    with pytest.raises(ValidationError, match="negative"):
        Settings(api_rate_limits={"free": -1})


def test_worker_info_round_trips_and_rejects_foreign_values() -> None:
    info = WorkerInfo("h-1-ab", "h", 1, ("a", "a-express"), 7, 2, 10, 20)
    assert WorkerInfo.from_json(info.to_json()) == info
    assert WorkerInfo.from_json("not json") is None
    assert WorkerInfo.from_json('{"id": "x"}') is None
    assert heartbeat_key("bull", "w") == "bull:settler:workers:w"
    assert workers_pattern("bull") == "bull:settler:workers:*"

"""Settings for a Redis Cluster: a hash-tagged prefix and a seed URL are required."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from settler_jobs.config import Settings


@pytest.fixture(autouse=True)
def _no_redis_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "SETTLER_REDIS_URL", "SETTLER_REDIS_CLUSTER", "SETTLER_QUEUE_PREFIX"):
        monkeypatch.delenv(name, raising=False)


def _settings(**values: object) -> Settings:
    return Settings(**values)  # type: ignore[arg-type]


def test_a_cluster_takes_a_seed_url_and_a_hash_tagged_prefix() -> None:
    s = _settings(redis_url="redis://10.0.0.7:7000", redis_cluster=True, queue_prefix="{settler}")
    assert (s.redis_cluster, s.queue_prefix) == (True, "{settler}")


def test_a_cluster_without_a_hash_tag_is_refused_with_the_reason() -> None:
    reason = r"hash-tagged SETTLER_QUEUE_PREFIX such as \{settler\}"
    with pytest.raises(ValidationError, match=reason):
        _settings(redis_url="redis://10.0.0.7:7000", redis_cluster=True, queue_prefix="bull")


def test_a_cluster_without_a_url_is_refused() -> None:
    with pytest.raises(ValidationError, match="SETTLER_REDIS_CLUSTER needs REDIS_URL"):
        _settings(redis_cluster=True, queue_prefix="{settler}")


@pytest.mark.parametrize("prefix", ["{settler}", "bull", "test-1.a_b"])
def test_prefixes_that_are_accepted(prefix: str) -> None:
    assert _settings(queue_prefix=prefix).queue_prefix == prefix


@pytest.mark.parametrize("prefix", ["{}", "{a", "a}", "{a}b", "a{b}", "{a:b}", "a b", ""])
def test_prefixes_that_are_refused(prefix: str) -> None:
    with pytest.raises(ValidationError):
        _settings(queue_prefix=prefix)

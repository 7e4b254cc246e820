"""The job data envelope: the seed's shape in, validated parts out."""

from __future__ import annotations

import pytest

from settler_jobs import envelope
from settler_jobs.domain import PriorityClass, Tier
from settler_jobs.errors import InvalidJob, PayloadTooLarge, PermanentFailure


def _build(payload: dict[str, object]) -> dict[str, object]:
    return envelope.build(
        payload,
        tenant_id="t1",
        tier=Tier.GROWTH,
        job_id="job-1",
        priority=PriorityClass.HIGH,
        timeout_s=2.5,
    )


def test_build_keeps_the_seed_shape_flat() -> None:
    data = _build({"adapterConfig": {"a": 1}})
    assert data == {
        "tenantId": "t1",
        "tenantTier": "growth",
        "jobId": "job-1",
        "priorityClass": "HIGH",
        "timeoutMs": 2500,
        "adapterConfig": {"a": 1},
    }


@pytest.mark.parametrize("key", ["tenantId", "tenantTier", "jobId"])
def test_payload_cannot_choose_its_tenant_or_id(key: str) -> None:
    with pytest.raises(InvalidJob, match="come from the caller"):
        _build({key: "evil"})


def test_parse_round_trips_and_accepts_node_style_data() -> None:
    env = envelope.parse(_build({"x": 1}))
    assert (env.tenant_id, env.tier, env.priority, env.timeout_s) == (
        "t1",
        Tier.GROWTH,
        PriorityClass.HIGH,
        2.5,
    )
    assert env.payload == {"x": 1}
    node = envelope.parse({"tenantId": "t2", "tenantTier": "PRO", "jobId": "job-456", "a": 1})
    assert (node.tier, node.job_id, node.priority) == (Tier.GROWTH, "job-456", None)


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"tenantTier": "free"},
        {"tenantId": "a:b", "tenantTier": "free"},
        {"tenantId": "t", "tenantTier": "gold"},
        {"tenantId": "t", "tenantTier": "free", "timeoutMs": -1},
    ],
)
def test_parse_refuses_what_cannot_run_safely(data: object) -> None:
    with pytest.raises(PermanentFailure):
        envelope.parse(data)


def test_size_limit_names_limit_and_size() -> None:
    data = _build({"blob": "x" * 2000})
    size = envelope.encoded_size(data, 10_000)
    with pytest.raises(PayloadTooLarge, match=f"{size} bytes, over the limit of 1000 bytes"):
        envelope.encoded_size(data, 1000)


def test_size_counts_utf8_bytes_not_characters() -> None:
    one = envelope.encoded_size({"s": "é" * 100}, 10_000)
    assert one >= 200


def test_unserialisable_data_is_invalid() -> None:
    with pytest.raises(InvalidJob, match="JSON"):
        envelope.encoded_size({"x": object()}, 100)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {"deep": None}])
def test_data_a_node_consumer_could_not_read_is_invalid(value: object) -> None:
    if isinstance(value, dict):
        nested: dict[str, object] = {}
        cursor = nested
        for _ in range(100_000):
            cursor["x"] = cursor = {}
        value = nested
    with pytest.raises(InvalidJob, match="JSON"):
        envelope.encoded_size({"v": value}, 10_000_000)


def test_read_fast_paths_keep_the_rules_and_messages() -> None:
    # A tenant id is validated the first time and remembered; an invalid one never is.
    for _ in range(2):
        with pytest.raises(PermanentFailure, match="envelope is invalid: invalid tenant id 'a:b'"):
            envelope.read({"tenantId": "a:b", "tenantTier": "free"})
        with pytest.raises(PermanentFailure, match="envelope is invalid: invalid tenant id"):
            envelope.read({"tenantId": ["t1"], "tenantTier": "free"})
        tenant, tier, job_id, priority, timeout_s, payload = envelope.read(
            {"tenantId": "t1", "tenantTier": "free", "priorityClass": "low", "x": 1}
        )
        assert (tenant, tier, job_id, priority, timeout_s) == (
            "t1",
            Tier.FREE,
            None,
            PriorityClass.LOW,
            None,
        )
        assert payload == {"x": 1}
    with pytest.raises(PermanentFailure, match="unknown priority 'urgent'"):
        envelope.read({"tenantId": "t1", "tenantTier": "free", "priorityClass": "urgent"})
    with pytest.raises(PermanentFailure, match="unknown priority '\\[1\\]'"):
        envelope.read({"tenantId": "t1", "tenantTier": "free", "priorityClass": [1]})
    with pytest.raises(PermanentFailure, match="unknown tier"):
        envelope.read({"tenantId": "t1", "tenantTier": {"a": 1}})
    with pytest.raises(PermanentFailure, match="timeoutMs must be an integer"):
        envelope.read({"tenantId": "t1", "tenantTier": "free", "timeoutMs": 1.5})


def test_parse_is_read_as_an_envelope() -> None:
    data = _build({"x": 1})
    assert tuple(getattr(envelope.parse(data), f) for f in envelope.Envelope.__slots__) == (
        envelope.read(data)
    )


@pytest.mark.parametrize("value", ["a\x00b", {"deep": ["x", "\x00"]}, "\\\x00", "\x00"])
def test_nul_characters_are_refused_on_every_backend(value: object) -> None:
    with pytest.raises(InvalidJob, match="NUL"):
        envelope.encoded_size({"v": value}, 10_000)


@pytest.mark.parametrize("value", ["\\u0000", "a\\\\u0000", "\x01 and \\u0000"])
def test_the_text_of_an_escape_is_not_a_nul(value: str) -> None:
    assert envelope.encoded_size({"v": value}, 10_000) > 0

"""The per-tenant accounting buffer: what it counts before anything is written."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from settler_jobs.tenants.stats import TenantStats, hour_bucket, stats_key

AT = datetime(2026, 6, 10, 14, 37, tzinfo=UTC)


def test_buffer_counts_per_kind_and_five_minute_slot_and_caps_recent_jobs() -> None:
    stats = TenantStats("bull", recent_cap=2)
    assert not stats.pending
    for n in range(3):
        stats.record("t1", "email", "completed", job_id=f"j{n}", attempt=1, duration_ms=5, at=AT)
    stats.record(
        "t1", "email", "failed", job_id="jx", attempt=3, duration_ms=5, at=AT, error="E" * 500
    )
    assert stats.pending
    counts = stats._counts
    assert counts[("t1", "2026061014", "completed:email")] == 3
    assert counts[("t1", "2026061014", "completed@7")] == 3
    assert counts[("t1", "2026061014", "failed:email")] == 1
    recent = [json.loads(r) for r in stats.recent_json("t1")]
    assert [r["id"] for r in recent] == ["j2", "jx"]  # capped at the newest two
    assert len(recent[-1]["error"]) == 200


def test_keys() -> None:
    assert hour_bucket(AT) == "2026061014"
    assert stats_key("bull", "t1", "2026061014") == "bull:settler:stats:t1:2026061014"


def test_summaries_are_written_exactly_as_json_dumps_writes_them() -> None:
    from settler_jobs.tenants.stats import _summary_json

    cases = [
        ("j1", "email", "completed", 1, 0, 1_781_102_220_007, None),
        ('a"b\\c', "k-1", "failed", 12, 98_765, 1_781_102_220_999, 'boom é "x"\n' * 30),
        ("☃", "k", "retried", 2, 5, 0, ""),
    ]
    for job_id, kind, outcome, attempt, duration_ms, at_ms, error in cases:
        finished = datetime.fromtimestamp(at_ms / 1000, UTC).isoformat(timespec="milliseconds")
        expected = {
            "id": job_id,
            "kind": kind,
            "outcome": outcome,
            "attempt": attempt,
            "durationMs": duration_ms,
            "finishedAt": finished,
        }
        if error:
            expected["error"] = error[:200]
        item = (job_id, kind, outcome, attempt, duration_ms, at_ms, error)
        assert _summary_json(item) == json.dumps(expected)


def test_add_counts_like_record() -> None:
    stats = TenantStats("bull", recent_cap=5)
    stats.add("t1", "email", "completed", "j1", 1, 5, int(AT.timestamp() * 1000))
    recorded = TenantStats("bull", recent_cap=5)
    recorded.record("t1", "email", "completed", job_id="j1", attempt=1, duration_ms=5, at=AT)
    assert stats._counts == recorded._counts
    assert stats.recent_json("t1") == recorded.recent_json("t1")

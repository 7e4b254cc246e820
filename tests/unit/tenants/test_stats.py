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

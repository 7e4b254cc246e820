"""The seed's job data shapes (what a Node producer sends): accepted where they carry
references, refused with guidance where they would carry URLs, secrets or inline sources."""

from __future__ import annotations

from typing import Any

import pytest

from settler_jobs.registry import default_registry

ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("email-sending", {"to": "user@example.com", "template": "welcome", "data": {"name": "A"}}),
    ("cache-warming", {"cacheKeys": ["kpi-health", "recent-jobs"]}),
    ("reconciliation", {"adapterConfig": {"definitionId": "0123456789abcdef"}}),
]
REFUSED: list[tuple[str, dict[str, Any], str]] = [
    (
        "webhook-delivery",
        {"webhookId": "w1", "url": "https://x.example/h", "payload": {}, "secret": "s"},
        "carry a deliveryId",
    ),
    ("export-generation", {"reportId": "r1", "format": "csv", "filters": {}}, "carry an exportId"),
    ("reconciliation", {"adapterConfig": {"stripe": {"key": "sk"}}}, "needs a definitionId"),
]


@pytest.mark.parametrize(("kind", "data"), ACCEPTED)
def test_seed_shapes_with_references_are_accepted(kind: str, data: dict[str, Any]) -> None:
    default_registry().get(kind).parse_payload(data)


@pytest.mark.parametrize(("kind", "data", "guidance"), REFUSED)
def test_seed_shapes_with_urls_secrets_or_inline_sources_are_refused_with_guidance(
    kind: str, data: dict[str, Any], guidance: str
) -> None:
    with pytest.raises(ValueError, match=guidance):
        default_registry().get(kind).parse_payload(data)

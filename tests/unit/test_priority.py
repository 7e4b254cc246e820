"""The priority rule, pinned.

With fair share (the default) a job's BullMQ priority is its flow's virtual finish tag:
`max(F_flow, clock) + step`, step = 200 / importance. So the step table below decides
both the share of a lane (a flow gets `importance` jobs per 200 units) and the order of
fresh flows (smaller step first). With fair share off, the static number is used.
"""

from __future__ import annotations

import itertools

import pytest

from settler_jobs.domain import (
    FAIR_SCALE,
    PriorityClass,
    Tier,
    bullmq_priority,
    fair_step,
    importance,
    uses_express_lane,
)

P, T = PriorityClass, Tier

# (class, tier, importance, fair step, static BullMQ number) for all 20 combinations.
TABLE = [
    (P.LOW, T.FREE, 1, 200, 200),
    (P.LOW, T.STARTER, 2, 100, 199),
    (P.LOW, T.GROWTH, 5, 40, 196),
    (P.LOW, T.SCALE, 10, 20, 191),
    (P.NORMAL, T.FREE, 5, 40, 196),
    (P.NORMAL, T.STARTER, 10, 20, 191),
    (P.NORMAL, T.GROWTH, 25, 8, 176),
    (P.NORMAL, T.SCALE, 50, 4, 151),
    (P.HIGH, T.FREE, 10, 20, 191),
    (P.HIGH, T.STARTER, 20, 10, 181),
    (P.HIGH, T.GROWTH, 50, 4, 151),
    (P.HIGH, T.SCALE, 100, 2, 101),
    (P.CRITICAL, T.FREE, 20, 10, 181),
    (P.CRITICAL, T.STARTER, 40, 5, 161),
    (P.CRITICAL, T.GROWTH, 100, 2, 101),
    (P.CRITICAL, T.SCALE, 200, 1, 1),
    (P.LOW, T.ENTERPRISE, 1, 200, 20),
    (P.NORMAL, T.ENTERPRISE, 5, 40, 16),
    (P.HIGH, T.ENTERPRISE, 10, 20, 11),
    (P.CRITICAL, T.ENTERPRISE, 20, 10, 1),
]


def test_table_covers_every_combination() -> None:
    assert {(c, t) for c, t, _, _, _ in TABLE} == set(itertools.product(P, T))


@pytest.mark.parametrize(("cls", "tier", "weight", "step", "number"), TABLE)
def test_importance_step_and_static_number(
    cls: PriorityClass, tier: Tier, weight: int, step: int, number: int
) -> None:
    assert importance(cls, tier) == weight
    assert fair_step(cls, tier) == step
    assert step * weight == FAIR_SCALE  # whole steps: tags stay integers, shares exact
    assert bullmq_priority(cls, tier) == number
    assert 1 <= number <= 2_097_152  # BullMQ's accepted range


def test_more_important_always_gets_a_smaller_number_and_ties_share_one() -> None:
    shared = [(c, t) for c, t, _, _, _ in TABLE if t is not T.ENTERPRISE]
    for a, b in itertools.product(shared, repeat=2):
        ia, ib = importance(*a), importance(*b)
        na, nb = bullmq_priority(*a), bullmq_priority(*b)
        sa, sb = fair_step(*a), fair_step(*b)
        assert (ia > ib) == (na < nb) == (sa < sb)
        assert (ia == ib) == (na == nb) == (sa == sb)


def test_enterprise_is_ordered_by_class_alone_in_its_own_lane() -> None:
    numbers = [bullmq_priority(c, T.ENTERPRISE) for c in (P.CRITICAL, P.HIGH, P.NORMAL, P.LOW)]
    assert numbers == sorted(numbers)
    steps = [fair_step(c, T.ENTERPRISE) for c in (P.CRITICAL, P.HIGH, P.NORMAL, P.LOW)]
    assert steps == [10, 20, 40, 200]
    assert all(uses_express_lane(T.ENTERPRISE) for _ in numbers)
    assert not any(uses_express_lane(t) for t in T if t is not T.ENTERPRISE)


@pytest.mark.parametrize(
    ("text", "tier"), [("pro", T.GROWTH), ("GROWTH", T.GROWTH), (" free ", T.FREE)]
)
def test_tier_parse_accepts_alias_and_case(text: str, tier: Tier) -> None:
    assert Tier.parse(text) is tier


def test_unknown_names_are_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="expected one of free, starter"):
        Tier.parse("platinum")
    with pytest.raises(ValueError, match="LOW, NORMAL, HIGH, CRITICAL"):
        PriorityClass.parse("urgent")

"""The matching engine on small datasets whose right answer is known."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settler_jobs.reconcile.matching import Matching, Reason, Rule, match
from settler_jobs.reconcile.normalise import FIELDS, normalise
from settler_jobs.reconcile.specs import FieldMapping, MatchRules

D0 = date(2026, 3, 2)


@dataclass(frozen=True)
class Rec:
    id: str | None = None
    amount: str = "10.00"
    currency: str = "USD"
    day: int | None = 0
    description: str | None = None
    reference: str | None = None


def frame(*recs: Rec) -> pl.DataFrame:
    rows = [
        {
            "line": i + 2,
            "id": r.id,
            "amount": r.amount,
            "currency": r.currency,
            "date": None if r.day is None else (D0 + timedelta(days=r.day)).isoformat(),
            "description": r.description,
            "reference": r.reference,
        }
        for i, r in enumerate(recs)
    ]
    schema = {"line": pl.Int64, **dict.fromkeys(FIELDS, pl.String)}
    records, rejects = normalise(pl.DataFrame(rows, schema=schema), FieldMapping())
    assert rejects.is_empty()
    return records


def run(src: list[Rec], tgt: list[Rec], rules: MatchRules | None = None) -> Matching:
    return match(frame(*src), frame(*tgt), rules or MatchRules())


def pairs(result: Matching) -> set[tuple[int, int, str]]:
    return set(result.matches.select("s", "t", "rule").rows())


def reasons(frame: pl.DataFrame) -> dict[int, str]:
    return dict(frame.select("row", "reason").rows())


def test_exact_ids_match_with_full_confidence() -> None:
    result = run([Rec("a"), Rec("b", "5.00")], [Rec("b", "5.00", day=9), Rec("a", day=-9)])
    assert pairs(result) == {(0, 1, "exact_id"), (1, 0, "exact_id")}
    assert result.matches["confidence"].to_list() == [1.0, 1.0]
    assert result.unmatched_source.is_empty() and result.unmatched_target.is_empty()


def test_same_id_with_another_amount_or_currency_is_a_discrepancy() -> None:
    result = run(
        [Rec("a", "10.00"), Rec("b", "10.00")], [Rec("a", "10.01"), Rec("b", "10.00", "EUR")]
    )
    assert result.matches.is_empty()
    kinds = result.discrepancies.select("s", "t", "rule", "kind").rows()
    assert kinds == [(0, 0, "exact_id", "amount_mismatch"), (1, 1, "exact_id", "currency_mismatch")]


def test_references_match_after_normalisation() -> None:
    result = run([Rec(reference="inv 001")], [Rec(reference="INV001", day=20)])
    assert pairs(result) == {(0, 0, "exact_reference")}
    assert result.matches["confidence"].to_list() == [0.98]


def test_duplicates_on_either_side_pair_once_and_the_rest_say_why() -> None:
    rules = MatchRules(date_window_days=0)
    result = run([Rec("a", day=0), Rec("a", day=5)], [Rec("a", day=5)], rules)
    assert pairs(result) == {(1, 0, "exact_id")}  # same amount: the closer date wins
    assert reasons(result.unmatched_source) == {0: Reason.DUPLICATE_KEY}
    result = run([Rec("a")], [Rec("a"), Rec("a")], rules)
    assert pairs(result) == {(0, 0, "exact_id")}
    assert reasons(result.unmatched_target) == {1: Reason.DUPLICATE_KEY}


@pytest.mark.parametrize(
    ("target_amount", "rules", "matched"),
    [
        ("10.05", MatchRules(amount_tolerance_minor=5), True),
        ("10.06", MatchRules(amount_tolerance_minor=5), False),
        ("10.10", MatchRules(amount_tolerance_percent=Decimal(1)), True),
        ("10.11", MatchRules(amount_tolerance_percent=Decimal(1)), False),
        ("9.90", MatchRules(amount_tolerance_minor=2, amount_tolerance_percent=Decimal(1)), True),
        ("10.00", MatchRules(), True),
        ("10.01", MatchRules(), False),
    ],
)
def test_amount_tolerance_is_inclusive(
    target_amount: str, rules: MatchRules, matched: bool
) -> None:
    result = run([Rec("s1")], [Rec("t1", target_amount)], rules)
    assert pairs(result) == ({(0, 0, "tolerance")} if matched else set())


@pytest.mark.parametrize(("day", "matched"), [(3, True), (-3, True), (4, False), (-4, False)])
def test_date_window_is_inclusive(day: int, matched: bool) -> None:
    result = run([Rec("s1")], [Rec("t1", day=day)], MatchRules(date_window_days=3))
    assert pairs(result) == ({(0, 0, "tolerance")} if matched else set())
    if not matched:
        assert reasons(result.unmatched_source) == {0: Reason.NO_CANDIDATE}


def test_without_a_window_dates_are_ignored() -> None:
    result = run([Rec("s1")], [Rec("t1", day=400)], MatchRules(date_window_days=None))
    assert pairs(result) == {(0, 0, "tolerance")}


def test_refunds_match_refunds_never_payments() -> None:
    rules = MatchRules(amount_tolerance_minor=5000)
    result = run([Rec("r", "-10.00")], [Rec("p", "10.00"), Rec("q", "-12.00")], rules)
    assert pairs(result) == {(0, 1, "tolerance")}


def test_currencies_never_mix() -> None:
    result = run([Rec("s", "10.00", "USD")], [Rec("t", "10.00", "EUR")])
    assert pairs(result) == set()
    assert reasons(result.unmatched_target) == {0: Reason.NO_CANDIDATE}


def test_one_against_many_candidates_the_closest_wins_and_one_to_one_holds() -> None:
    src = [Rec("s0", "10.00", day=0), Rec("s1", "10.00", day=0)]
    tgt = [
        Rec("t0", "10.03", day=0),
        Rec("t1", "10.00", day=2),
        Rec("t2", "10.00", day=1),
        Rec("t3", "9.99", day=0),
    ]
    result = run(src, tgt, MatchRules(amount_tolerance_minor=5))
    # amount difference first (t1, t2 exact), then the date difference (t2 is closer).
    assert pairs(result) == {(0, 2, "tolerance"), (1, 1, "tolerance")}
    assert reasons(result.unmatched_target) == {
        0: Reason.CANDIDATES_TAKEN,
        3: Reason.CANDIDATES_TAKEN,
    }


def test_ties_break_by_position_so_results_are_deterministic() -> None:
    src = [Rec("s0"), Rec("s1")]
    tgt = [Rec("t0"), Rec("t1")]
    first = run(src, tgt)
    assert pairs(first) == {(0, 0, "tolerance"), (1, 1, "tolerance")}
    assert run(src, tgt).matches.equals(first.matches)


def test_confidence_falls_with_distance_and_minimum_confidence_applies() -> None:
    rules = MatchRules(amount_tolerance_minor=10, date_window_days=4)
    result = run([Rec("s", "10.00")], [Rec("t", "10.10", day=4)], rules)
    assert result.matches["confidence"].to_list() == [0.5]
    strict = rules.model_copy(update={"min_confidence": 0.8})
    result = run([Rec("s", "10.00")], [Rec("t", "10.10", day=4)], strict)
    assert result.matches.is_empty()
    assert reasons(result.unmatched_source) == {0: Reason.BELOW_MIN_CONFIDENCE}


def test_records_without_a_date_only_match_on_keys() -> None:
    result = run([Rec("a", day=None), Rec("x", day=None)], [Rec("a"), Rec("y")])
    assert pairs(result) == {(0, 0, "exact_id")}
    assert reasons(result.unmatched_source) == {1: Reason.NO_DATE}


def test_description_similarity_pairs_late_bookings_above_a_minimum() -> None:
    rules = MatchRules(description_min_similarity=0.5, description_window_days=30)
    src = [Rec("s0", description="ACME Corp invoice 7781"), Rec("s1", description="rent")]
    tgt = [Rec("t0", day=12, description="invoice 7781 acme"), Rec("t1", day=12, description="x")]
    result = run(src, tgt, rules)
    assert pairs(result) == {(0, 0, "description")}
    assert result.matches["confidence"].to_list() == [pytest.approx(0.675)]
    assert run(src, tgt, MatchRules()).matches.is_empty()


def test_keys_shared_by_too_many_records_are_not_identifiers() -> None:
    rules = MatchRules(max_candidates=2, date_window_days=0)
    src = [Rec(reference="N/A", amount=f"{i}.00") for i in range(1, 4)]
    tgt = [Rec(reference="N/A", amount=f"{i}.00", day=1) for i in range(1, 4)]
    result = run(src, tgt, rules)
    assert result.matches.is_empty() and result.discrepancies.is_empty()


def test_a_generated_dataset_is_recovered_exactly() -> None:
    rnd = random.Random(7)
    amounts = rnd.sample(range(100, 10_000_000, 50), 3000)  # 50 apart: no ambiguity
    src, tgt, truth = [], [], set()
    for i, cents in enumerate(amounts):
        kind = i % 4
        currency = ("USD", "EUR", "JPY")[i % 3]
        text = str(cents) if currency == "JPY" else f"{cents // 100}.{cents % 100:02d}"
        src.append(Rec(f"s{i}", text, currency, day=rnd.randrange(300)))
        if kind == 0:
            tgt.append(Rec(f"s{i}", text, currency, day=rnd.randrange(300)))
        elif kind in (1, 2):
            moved = cents + rnd.randrange(-3, 4)
            moved_text = str(moved) if currency == "JPY" else f"{moved // 100}.{moved % 100:02d}"
            day = src[-1].day + rnd.randrange(-3, 4)  # type: ignore[operator]
            tgt.append(Rec(f"t{i}", moved_text, currency, day=day))
        else:
            continue
        truth.add((i, len(tgt) - 1))
    order = list(range(len(tgt)))
    rnd.shuffle(order)
    shuffled = [tgt[j] for j in order]
    position = {j: k for k, j in enumerate(order)}
    rules = MatchRules(amount_tolerance_minor=3, date_window_days=3)
    result = run(src, shuffled, rules)
    found = {(s, t) for s, t, _rule in pairs(result)}
    assert found == {(s, position[t]) for s, t in truth}
    assert result.unmatched_source.height == 750 and result.unmatched_target.is_empty()


def test_many_to_one_pairs_a_days_sources_with_their_payout() -> None:
    rules = MatchRules(many_to_one=True, date_window_days=2)
    src = [
        Rec("a", "10.00"),
        Rec("b", "5.00"),
        Rec("c", "2.50"),
        Rec("d", "9.99", day=1),  # another day: its own group of one, left over
        Rec("e", "2.50", "EUR"),  # another currency
        Rec("f", "1.00", day=1),
    ]
    tgt = [Rec("payout", "17.50", day=1), Rec("f", "1.00", day=1)]
    result = run(src, tgt, rules)
    assert pairs(result) == {
        (0, 0, "many_to_one"),
        (1, 0, "many_to_one"),
        (2, 0, "many_to_one"),
        (5, 1, "exact_id"),  # one-to-one rules go first
    }
    assert set(result.matches.filter(pl.col("t") == 0)["confidence"]) == {0.7}
    assert set(reasons(result.unmatched_source)) == {3, 4}
    assert pairs(run(src, tgt, MatchRules(date_window_days=2))) == {(5, 1, "exact_id")}
    off = [Rec("payout", "17.51", day=1)]
    assert run(src, off, rules).matches.is_empty()
    assert Rule.MANY_TO_ONE.value == "many_to_one"


# -- every record ends up matched once or unmatched, never both, never twice --------------

records = st.lists(
    st.builds(
        Rec,
        id=st.sampled_from([None, "a", "b", "c"]),
        amount=st.sampled_from(["1.00", "1.01", "1.03", "-1.00", "2.00", "0"]),
        currency=st.sampled_from(["USD", "EUR"]),
        day=st.sampled_from([None, 0, 1, 2, 5]),
        description=st.sampled_from([None, "rent", "rent march", "fee"]),
        reference=st.sampled_from([None, "R1", "r 1", "R2"]),
    ),
    max_size=25,
)
rule_sets = st.builds(
    MatchRules,
    match_on_id=st.booleans(),
    match_on_reference=st.booleans(),
    amount_tolerance_minor=st.sampled_from([0, 1, 5]),
    date_window_days=st.sampled_from([None, 0, 2]),
    min_confidence=st.sampled_from([0.0, 0.5, 0.8]),
    description_min_similarity=st.sampled_from([None, 0.5]),
    max_candidates=st.sampled_from([1, 2, 32]),
    many_to_one=st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(src=records, tgt=records, rules=rule_sets)
def test_every_record_is_accounted_for_exactly_once(
    src: list[Rec], tgt: list[Rec], rules: MatchRules
) -> None:
    result = run(src, tgt, rules)
    # a target paired by many_to_one appears once per source of its group: count it once
    one_each = result.matches.unique(subset=["t", "rule"]).filter(pl.col("rule") == "many_to_one")
    singles = result.matches.filter(pl.col("rule") != "many_to_one")
    for side, n, unmatched in (
        ("s", len(src), result.unmatched_source),
        ("t", len(tgt), result.unmatched_target),
    ):
        matched = pl.concat([singles, one_each]) if side == "t" else result.matches
        paired = matched[side].to_list() + result.discrepancies[side].to_list()
        left = unmatched["row"].to_list()
        assert len(paired) == len(set(paired)), "a record was paired twice"
        assert not set(paired) & set(left), "a record is both paired and unmatched"
        assert sorted(paired + left) == list(range(n)), "a record went missing"
    confidences = result.matches["confidence"].to_list()
    assert all(0.0 <= c <= 1.0 for c in confidences)
    fuzzy = result.matches.filter(pl.col("rule") != Rule.EXACT_ID)
    fuzzy = fuzzy.filter(pl.col("rule") != Rule.EXACT_REFERENCE)
    assert all(c >= rules.min_confidence for c in fuzzy["confidence"].to_list())
    assert set(result.unmatched_source["reason"]) <= set(Reason)

"""The one-to-one matching engine over normalised records (see `normalise.RECORD_SCHEMA`).

Stages, each over the records no earlier stage paired:

1. ``exact_id`` then ``exact_reference``: records sharing an external id (reference).
   Same currency and amount: a match of confidence 1.0 (0.98 for a reference). Any
   other difference is a *discrepancy* (both records are consumed: they are the same
   transaction, disagreeing). A key held by more than `max_candidates` records on one
   side is no identifier and is skipped.
2. ``tolerance``: same currency, same sign, amount within the tolerance (the larger of
   `amount_tolerance_minor` and `amount_tolerance_percent` of the source amount), dates
   within `date_window_days`. Confidence 0.95 - 0.25 x (amount difference / tolerance)
   - 0.2 x (date difference / window), so in [0.5, 0.95]; pairs below `min_confidence`
   are dropped.
3. ``description`` (only with `description_min_similarity`): like 2 but dates within
   `description_window_days`, and the descriptions' word-set similarity (Jaccard) at
   least that minimum; confidence 0.9 x similarity, also held to `min_confidence`.

4. ``many_to_one`` (only with `many_to_one`): see `grouping`; several sources share
   one target, the only rule that breaks one-to-one (on the target side).

Within a stage the closest pair wins: pairs are taken greedily in the order (amount
difference, date difference, source position, target position) — for stage 3, highest
similarity first — and a pair whose record is already taken is skipped, so the result
is one-to-one and deterministic. Every record left over gets a reason (`Reason`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import polars as pl

from settler_jobs.reconcile import candidates
from settler_jobs.reconcile.grouping import many_to_one
from settler_jobs.reconcile.specs import MatchRules

MAX_PASSES: Final = 4
MATCH_SCHEMA: Final = {"s": pl.Int64, "t": pl.Int64, "rule": pl.String, "confidence": pl.Float64}
DISCREPANCY_SCHEMA: Final = {"s": pl.Int64, "t": pl.Int64, "rule": pl.String, "kind": pl.String}
UNMATCHED_SCHEMA: Final = {"row": pl.Int64, "reason": pl.String}
_WORD: Final = re.compile(r"[a-z0-9]+")


class Rule(StrEnum):
    """Why two records were paired."""

    EXACT_ID = "exact_id"
    EXACT_REFERENCE = "exact_reference"
    TOLERANCE = "tolerance"
    DESCRIPTION = "description"
    MANY_TO_ONE = "many_to_one"


class Reason(StrEnum):
    """Why a record stayed unmatched (first that applies, in this order)."""

    DUPLICATE_KEY = "duplicate_key"
    """Its id or reference matched a record that was paired with another duplicate."""
    CANDIDATES_TAKEN = "candidates_taken"
    """Records close enough existed, but each was closer to (and paired with) another."""
    BELOW_MIN_CONFIDENCE = "below_min_confidence"
    """Only pairs below the minimum confidence were possible."""
    NO_DATE = "no_date"
    """It has no date, so only id or reference could pair it, and neither did."""
    NO_CANDIDATE = "no_candidate"
    """Nothing on the other side has its id, reference, or a close enough amount and date."""
    MALFORMED = "malformed"
    """The row could not be read (reported with its line and the problem)."""


@dataclass(frozen=True)
class Matching:
    """The engine's answer in record positions (`row` of each side's records)."""

    matches: pl.DataFrame
    """s, t, rule, confidence."""
    discrepancies: pl.DataFrame
    """s, t, rule, kind (`amount_mismatch` or `currency_mismatch`)."""
    unmatched_source: pl.DataFrame
    """row, reason."""
    unmatched_target: pl.DataFrame
    """row, reason."""


class _State:
    """Which records are taken, and what each side has seen of candidates."""

    def __init__(self, n_source: int, n_target: int) -> None:
        self.taken_s, self.taken_t = bytearray(n_source), bytearray(n_target)
        self.keyed_s, self.keyed_t = bytearray(n_source), bytearray(n_target)
        self.near_s, self.near_t = bytearray(n_source), bytearray(n_target)
        self.weak_s, self.weak_t = bytearray(n_source), bytearray(n_target)

    def free(self, frame: pl.DataFrame, taken: bytearray) -> pl.DataFrame:
        mask = pl.Series(list(taken), dtype=pl.UInt8) == 0
        return frame.filter(mask) if len(taken) else frame

    def greedy(self, s: list[int], t: list[int]) -> list[int]:
        """Positions of the pairs taken, walking the pairs in their given order."""
        taken_s, taken_t, picked = self.taken_s, self.taken_t, []
        for i, (a, b) in enumerate(zip(s, t, strict=True)):
            if taken_s[a] or taken_t[b]:
                continue
            taken_s[a] = taken_t[b] = 1
            picked.append(i)
        return picked

    def take(self, pairs: pl.DataFrame) -> None:
        """Mark every record of `pairs` (s, t) as taken."""
        _mark(self.taken_s, pairs["s"])
        _mark(self.taken_t, pairs["t"])


def _mark(flags: bytearray, rows: pl.Series) -> None:
    for row in rows.unique().to_list():
        flags[row] = 1


def _exact(
    state: _State,
    src: pl.DataFrame,
    tgt: pl.DataFrame,
    key: str,
    rule: Rule,
    conf: float,
    limit: int,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    def side(frame: pl.DataFrame, prefix: str) -> pl.DataFrame:
        keyed = state.free(frame, state.taken_s if prefix == "s" else state.taken_t)
        keyed = keyed.filter(pl.col(key).is_not_null())
        keyed = keyed.filter(pl.len().over(key) <= limit)
        return keyed.select(
            pl.col(key),
            pl.col("row").alias(prefix),
            pl.col("amount").alias(f"{prefix}a"),
            pl.col("currency").alias(f"{prefix}c"),
            pl.col("ts").alias(f"{prefix}ts"),
        )

    pairs = side(src, "s").join(side(tgt, "t"), on=key)
    _mark(state.keyed_s, pairs["s"])
    _mark(state.keyed_t, pairs["t"])
    ordered = pairs.with_columns(
        cm=(pl.col("sc") != pl.col("tc")).cast(pl.Int8),
        da=(pl.col("sa") - pl.col("ta")).abs(),
        dt=(pl.col("sts") - pl.col("tts")).abs().fill_null(2**62),
    ).sort("cm", "da", "dt", "s", "t")
    picked = ordered[state.greedy(ordered["s"].to_list(), ordered["t"].to_list())]
    kind = (
        pl.when(pl.col("cm") == 1)
        .then(pl.lit("currency_mismatch"))
        .when(pl.col("da") != 0)
        .then(pl.lit("amount_mismatch"))
    )
    tagged = picked.with_columns(kind=kind, rule=pl.lit(rule.value), confidence=pl.lit(conf))
    clean = tagged.filter(pl.col("kind").is_null()).select(MATCH_SCHEMA.keys())
    return clean, tagged.filter(pl.col("kind").is_not_null()).select(DISCREPANCY_SCHEMA.keys())


def _similarity(a: str | None, b: str | None) -> float:
    words_a, words_b = set(_WORD.findall((a or "").lower())), set(_WORD.findall((b or "").lower()))
    if not words_a or not words_b:
        return 0.0
    return len(words_a & words_b) / len(words_a | words_b)


Scorer = Callable[[pl.DataFrame], pl.DataFrame]
"""Adds `confidence` (and `order`, sorted ascending first) to candidate pairs."""


def _near(
    state: _State,
    src: pl.DataFrame,
    tgt: pl.DataFrame,
    rules: MatchRules,
    window: int | None,
    rule: Rule,
    score: Scorer,
) -> pl.DataFrame:
    found: list[pl.DataFrame] = []
    for _ in range(MAX_PASSES):
        free_s, free_t = state.free(src, state.taken_s), state.free(tgt, state.taken_t)
        pairs = candidates.find(
            free_s,
            free_t,
            absolute=rules.amount_tolerance_minor,
            ppm=rules.tolerance_ppm,
            window_days=window,
            limit=rules.max_candidates,
        )
        if pairs.is_empty():
            break
        scored = score(pairs)
        strong = scored.filter(pl.col("confidence") >= rules.min_confidence)
        _mark(state.weak_s, scored["s"])
        _mark(state.weak_t, scored["t"])
        _mark(state.near_s, strong["s"])
        _mark(state.near_t, strong["t"])
        ordered = strong.sort("order", "da", "dt", "s", "t")
        picked = ordered[state.greedy(ordered["s"].to_list(), ordered["t"].to_list())]
        if picked.is_empty():
            break
        found.append(picked.with_columns(rule=pl.lit(rule.value)).select(MATCH_SCHEMA.keys()))
    return pl.concat(found) if found else pl.DataFrame(schema=MATCH_SCHEMA)


def _tolerance_scorer(rules: MatchRules) -> Scorer:
    window_us = (rules.date_window_days or 0) * candidates.DAY_US

    def score(pairs: pl.DataFrame) -> pl.DataFrame:
        allowed = candidates.tolerance(
            pl.col("sa"), rules.amount_tolerance_minor, rules.tolerance_ppm
        )
        amount_part = pl.when(allowed > 0).then(pl.col("da") / allowed).otherwise(0.0)
        date_part = pl.col("dt") / window_us if window_us else pl.lit(0.0)
        confidence = (0.95 - 0.25 * amount_part - 0.2 * date_part).clip(0.0, 1.0).round(4)
        return pairs.with_columns(confidence=confidence, order=pl.lit(0.0))

    return score


def _description_scorer(src: pl.DataFrame, tgt: pl.DataFrame, minimum: float) -> Scorer:
    def score(pairs: pl.DataFrame) -> pl.DataFrame:
        left = pairs.join(
            src.select(pl.col("row").alias("s"), pl.col("description").alias("x")), on="s"
        )
        both = left.join(
            tgt.select(pl.col("row").alias("t"), pl.col("description").alias("y")), on="t"
        )
        sims = [_similarity(a, b) for a, b in zip(both["x"], both["y"], strict=True)]
        similarity = pl.Series("sim", sims, dtype=pl.Float64)
        scored = both.with_columns(similarity).filter(pl.col("sim") >= minimum)
        return scored.with_columns(
            confidence=(0.9 * pl.col("sim")).round(4), order=-pl.col("sim")
        ).drop("x", "y", "sim")

    return score


def _with_source_amount(src: pl.DataFrame, score: Scorer) -> Scorer:
    amounts = src.select(pl.col("row").alias("s"), pl.col("amount").alias("sa"))

    def scored(pairs: pl.DataFrame) -> pl.DataFrame:
        return score(pairs.join(amounts, on="s")).drop("sa")

    return scored


def _reasons(frame: pl.DataFrame, state: _State, side: str) -> pl.DataFrame:
    taken = state.taken_s if side == "s" else state.taken_t
    keyed = state.keyed_s if side == "s" else state.keyed_t
    near = state.near_s if side == "s" else state.near_t
    weak = state.weak_s if side == "s" else state.weak_t
    flags = pl.DataFrame(
        {
            "taken": list(taken),
            "keyed": list(keyed),
            "near": list(near),
            "weak": list(weak),
        },
        schema=dict.fromkeys(("taken", "keyed", "near", "weak"), pl.UInt8),
    )
    reason = (
        pl.when(pl.col("keyed") == 1)
        .then(pl.lit(Reason.DUPLICATE_KEY.value))
        .when(pl.col("near") == 1)
        .then(pl.lit(Reason.CANDIDATES_TAKEN.value))
        .when(pl.col("weak") == 1)
        .then(pl.lit(Reason.BELOW_MIN_CONFIDENCE.value))
        .when(pl.col("ts").is_null())
        .then(pl.lit(Reason.NO_DATE.value))
        .otherwise(pl.lit(Reason.NO_CANDIDATE.value))
    )
    return (
        pl.concat([frame.select("row", "ts"), flags], how="horizontal")
        .filter(pl.col("taken") == 0)
        .select("row", reason.alias("reason"))
    )


def match(source: pl.DataFrame, target: pl.DataFrame, rules: MatchRules) -> Matching:
    """Pair normalised source and target records one-to-one (see the module docstring)."""
    state = _State(source.height, target.height)
    matches: list[pl.DataFrame] = []
    discrepancies: list[pl.DataFrame] = []
    exact = [
        (rules.match_on_id, "id", Rule.EXACT_ID, 1.0),
        (rules.match_on_reference, "reference", Rule.EXACT_REFERENCE, 0.98),
    ]
    for enabled, key, rule, conf in exact:
        if enabled:
            clean, differing = _exact(state, source, target, key, rule, conf, rules.max_candidates)
            matches.append(clean)
            discrepancies.append(differing)
    tolerance = _with_source_amount(source, _tolerance_scorer(rules))
    matches.append(
        _near(state, source, target, rules, rules.date_window_days, Rule.TOLERANCE, tolerance)
    )
    if rules.description_min_similarity is not None:
        describe = _description_scorer(source, target, rules.description_min_similarity)
        matches.append(
            _near(
                state,
                source,
                target,
                rules,
                rules.description_window_days,
                Rule.DESCRIPTION,
                describe,
            )
        )
    if rules.many_to_one:
        grouped = many_to_one(
            state.free(source, state.taken_s), state.free(target, state.taken_t), rules
        )
        state.take(grouped)
        matches.append(grouped)
    return Matching(
        matches=pl.concat(matches).sort("s") if matches else pl.DataFrame(schema=MATCH_SCHEMA),
        discrepancies=pl.concat(discrepancies).sort("s")
        if discrepancies
        else pl.DataFrame(schema=DISCREPANCY_SCHEMA),
        unmatched_source=_reasons(source, state, "s"),
        unmatched_target=_reasons(target, state, "t"),
    )

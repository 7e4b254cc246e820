"""Inline SVG charts as plain numbers for the templates (no chart library, no script)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 480
HEIGHT = 120


@dataclass(frozen=True, slots=True)
class Bar:
    """One stacked bar: the ok part on top of the failed part."""

    x: float
    width: float
    ok_y: float
    ok_h: float
    failed_y: float
    failed_h: float
    label: str


@dataclass(frozen=True, slots=True)
class BarChart:
    """Bars of (ok, failed) per minute and the scale's top value."""

    bars: list[Bar]
    top: int


def bar_chart(points: Sequence[tuple[int, int]]) -> BarChart:
    """Stacked bars for (completed, failed) per slot, oldest first."""
    top = max([ok + failed for ok, failed in points] + [1])
    step = WIDTH / max(len(points), 1)
    bars = []
    for i, (ok, failed) in enumerate(points):
        failed_h = HEIGHT * failed / top
        ok_h = HEIGHT * ok / top
        bars.append(
            Bar(
                round(i * step, 1),
                round(max(step - 1, 1), 1),
                round(HEIGHT - failed_h - ok_h, 1),
                round(ok_h, 1),
                round(HEIGHT - failed_h, 1),
                round(failed_h, 1),
                f"{ok} completed, {failed} failed",
            )
        )
    return BarChart(bars, top)


@dataclass(frozen=True, slots=True)
class LineChart:
    """A polyline's points attribute and the scale's top value."""

    points: str
    top: int
    samples: int


def line_chart(values: Sequence[int], slots: int = 60) -> LineChart:
    """A line over `slots` positions, the last value at the right edge."""
    top = max([*values, 1])
    step = WIDTH / max(slots - 1, 1)
    start = slots - len(values)
    coords = [
        f"{round((start + i) * step, 1)},{round(HEIGHT - HEIGHT * v / top, 1)}"
        for i, v in enumerate(values)
    ]
    return LineChart(" ".join(coords), top, len(values))

"""The repository's Prometheus rules file, and the metric names a PromQL expression reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import yaml

RULES_FILE: Final = Path(__file__).parents[1] / "deploy" / "prometheus" / "settler-jobs.rules.yml"

_KEYWORDS: Final = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "inf",
        "nan",
    }
)
_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS: Final = re.compile(r"\{[^{}]*\}")
_RANGE: Final = re.compile(r"\[[^\[\]]*\]")
_GROUPING: Final = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_NAME: Final = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def rules() -> list[dict[str, Any]]:
    """Every alerting rule of the rules file."""
    doc = yaml.safe_load(RULES_FILE.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def metric_names(expr: str) -> set[str]:
    """Names of the series `expr` selects (functions, keywords, labels and numbers left out)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _NAME.finditer(text):
        rest = text[match.end() :].lstrip()
        preceded = text[: match.start()]
        if rest.startswith("(") or match.group() in _KEYWORDS:
            continue  # a function or aggregation call, or an operator keyword
        if preceded and (preceded[-1].isdigit() or preceded[-1] == "."):
            continue  # part of a number such as 1e9
        names.add(match.group())
    return names

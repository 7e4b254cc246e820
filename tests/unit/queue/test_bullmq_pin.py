"""The lane loop speaks one bullmq release's Lua layout: the pin and the installed one agree."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

from bullmq.redis_connection import SCRIPT_DEFINITIONS

ROOT = Path(__file__).resolve().parents[3]
# The scripts lane_loop.py calls, with the key counts its argument builders fill.
SCRIPTS = {
    "moveToActive": "moveToActive-11.lua",
    "moveToFinished": "moveToFinished-14.lua",
    "moveToDelayed": "moveToDelayed-11.lua",
    "retryJob": "retryJob-11.lua",
    "extendLocks": "extendLocks-1.lua",
    "moveStalledJobsToWait": "moveStalledJobsToWait-9.lua",
}


def test_installed_bullmq_is_the_pinned_one() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [pin] = [d for d in deps if re.match(r"bullmq\b", d)]
    assert pin == f"bullmq[postgres]=={version('bullmq')}"


def test_the_scripts_the_lane_loop_calls_have_the_expected_layout() -> None:
    assert {name: SCRIPT_DEFINITIONS.get(name) for name in SCRIPTS} == SCRIPTS

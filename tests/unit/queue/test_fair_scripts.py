"""Our Lua: the capped pop replaces bullmq's helper in exactly the scripts the lane loop runs."""

from __future__ import annotations

import pytest

from settler_jobs.queue.fair import PatchedScript, lua, patch_pop


def _bullmq_text(name: str) -> str:
    from importlib import resources

    return resources.files("bullmq").joinpath(f"commands/{name}").read_text()


@pytest.mark.parametrize("script", ["moveToActive-11.lua", "moveToFinished-14.lua"])
def test_the_pop_is_replaced_once_and_the_rest_is_bullmqs(script: str) -> None:
    original = _bullmq_text(script)
    patched = patch_pop(original)
    assert "settlerRoom" in patched and "sf:park:" in patched
    assert patched.count("local function moveJobFromPrioritizedToActive(") == 1
    head = original.split("local function moveJobFromPrioritizedToActive(")[0]
    assert patched.startswith(head)
    tail = original.split("local function moveJobFromPrioritizedToActive(")[1]
    assert patched.endswith(tail[tail.index("\nend\n") + len("\nend\n") :])
    assert PatchedScript(patched).sha != PatchedScript(original).sha


def test_a_script_without_the_helper_is_refused() -> None:
    with pytest.raises(RuntimeError, match="not found"):
        patch_pop("return 1\n")


def test_our_scripts_ship_with_the_package() -> None:
    assert "REFUSED" in lua("reserve")
    assert "moveJobFromPrioritizedToActive" in lua("pop")

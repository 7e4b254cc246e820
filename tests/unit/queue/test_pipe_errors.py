"""Error replies of the pipelined connection: which ones mean "not run, send again"."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError, NoScriptError, ResponseError

from settler_jobs.queue.pipe import _error


@pytest.mark.parametrize(
    "reply",
    [
        "LOADING Redis is loading the dataset in memory",
        "BUSY Redis is busy running a script.",
        "READONLY You can't write against a read only replica.",
        "MASTERDOWN Link with MASTER is down",
    ],
)
def test_replies_of_commands_that_did_not_run_are_connection_errors(reply: str) -> None:
    assert isinstance(_error(reply), ConnectionError)


def test_noscript_and_other_errors_are_response_errors() -> None:
    assert isinstance(_error("NOSCRIPT No matching script."), NoScriptError)
    error = _error("ERR user_script:1: Script attempted to access nonexistent global variable")
    assert isinstance(error, ResponseError) and not isinstance(error, ConnectionError)

"""Which failures are temporary (answer 'retry later') and which are not."""

from __future__ import annotations

import pytest
from pymongo.errors import (
    AutoReconnect,
    DuplicateKeyError,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteConcernError,
)

from store.errors import NotFound, Unavailable, is_transient


@pytest.mark.parametrize(
    "error",
    [
        ServerSelectionTimeoutError("no primary"),
        AutoReconnect("connection closed"),
        WriteConcernError("waiting for replication timed out"),
        Unavailable("database down"),
        TimeoutError(),
    ],
)
def test_unreachable_or_slow_database_failures_are_temporary(error: Exception) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [DuplicateKeyError("dup"), OperationFailure("bad query"), NotFound("x"), ValueError("bug")],
)
def test_other_failures_are_not_temporary(error: Exception) -> None:
    assert not is_transient(error)

"""Domain exceptions of the store; ``api/`` and ``ingest/`` map them to their protocols."""

from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    PyMongoError,
    ServerSelectionTimeoutError,
    WaitQueueTimeoutError,
    WriteConcernError,
)


class StoreError(Exception):
    """Base of everything the store raises on purpose."""


class NotFound(StoreError):
    """The thing asked for does not exist (or is not visible to the caller)."""


class Conflict(StoreError):
    """The request contradicts the current state (e.g. releasing a released hold)."""


class Unavailable(StoreError):
    """The database cannot take the request now; the caller should answer 'try again later'."""


_TRANSIENT: tuple[type[BaseException], ...] = (
    Unavailable,
    TimeoutError,
    AutoReconnect,
    ConnectionFailure,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    ServerSelectionTimeoutError,
    WaitQueueTimeoutError,
    WriteConcernError,
)


def is_transient(exc: BaseException) -> bool:
    """True for failures that a retry later may not meet: unreachable, slow, no primary.

    A write that timed out waiting for its journaled majority is counted here: it may or may
    not be durable, so the sender must retry, and the retry is deduplicated.
    """
    if isinstance(exc, _TRANSIENT):
        return True
    return isinstance(exc, PyMongoError) and exc.has_error_label("RetryableWriteError")

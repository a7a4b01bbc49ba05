"""The retention rules as pure functions: deadlines, the maximum age, how a record names an
account. No I/O, so that every module (accounts, the sweep, the residue scan) can use them."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta


def subject_hmac(secret_key: bytes, account_id: str) -> str:
    """How a purge record names an account: verifiable by whoever knows the id, and nothing
    more (no email, no name)."""
    return hmac.new(secret_key, account_id.encode(), hashlib.sha256).hexdigest()


def max_age_cutoff(*, now: datetime, max_age: timedelta) -> datetime:
    """Content collected before this is past the maximum age."""
    return now - max_age

"""The retention rules as pure functions: deadlines, the maximum age, how a record names an
account. No I/O, so that every module (accounts, the sweep, the residue scan) can use them."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime, timedelta

# What an account id (the platform's own) may be: the API and the command line refuse anything
# else alike, so that an account made by one can always be named in the other's URLs.
ACCOUNT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$"
ACCOUNT_ID_RULE = "letters, digits and . _ : @ + - (at most 128, the first a letter or digit)"


def is_account_id(text: str) -> bool:
    return re.fullmatch(ACCOUNT_ID_PATTERN, text) is not None


def subject_hmac(secret_key: bytes, account_id: str) -> str:
    """How a purge record names an account: verifiable by whoever knows the id, and nothing
    more (no email, no name)."""
    return hmac.new(secret_key, account_id.encode(), hashlib.sha256).hexdigest()


def deletion_deadline(*, deleted_at: datetime, grace: timedelta) -> datetime:
    return deleted_at + grace


def max_age_cutoff(*, now: datetime, max_age: timedelta) -> datetime:
    """Content collected before this is past the maximum age."""
    return now - max_age

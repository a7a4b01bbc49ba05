"""The retention rules and the policy they read: which rule purges an account, the maximum
age, how a record names an account. No I/O, so that every module of retention can use them."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from store.documents import Account, PurgeRule


@dataclass(frozen=True)
class RetentionPolicy:
    grace: timedelta
    max_age: timedelta
    secret_key: bytes
    # Messages deleted per transaction: MongoDB's cost per deleted message (its eleven index
    # entries and the oplog) dominates beyond this; 500 swept 2,008 msg/s, 2,000 swept 2,468.
    batch_size: int = 2000
    # How many due accounts the sweep purges together: their holds, records, conclusions and
    # residue scans cost round trips per group, not per account (each keeps its own record).
    account_group: int = 200
    # A blob referenced this recently may be about to gain a message (ingest writes the blob,
    # then the message): it is left for a later sweep rather than deleted under that message.
    blob_quiet_period: timedelta = timedelta(minutes=5)
    # Where the service writes files (exports, journal): the residue scan searches them too.
    data_dir: Path | None = None
    # While deliveries wait to be filed, the sweep rests this long per second it worked:
    # 1.0 gives ingest half of the database between two batches, 0.5 a third.
    rest_per_work: float = 1.0
    # Audit events keep their free text (search terms, filters) this long, then only which
    # parameters were used (housekeeping redacts it): ARCHIVE_AUDIT_TEXT_MAX_AGE.
    audit_text_max_age: timedelta = timedelta(days=30)


def rule_for(account: Account) -> PurgeRule:
    return PurgeRule.ERASURE if account.erasure_requested_at else PurgeRule.ACCOUNT_DELETION


def subject_hmac(secret_key: bytes, account_id: str) -> str:
    """How a purge record names an account: verifiable by whoever knows the id, and nothing
    more (no email, no name)."""
    return hmac.new(secret_key, account_id.encode(), hashlib.sha256).hexdigest()


def max_age_cutoff(*, now: datetime, max_age: timedelta) -> datetime:
    """Content collected before this is past the maximum age."""
    return now - max_age

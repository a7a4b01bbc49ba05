"""Webhook signatures: ``sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>``."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

MAX_CLOCK_SKEW = timedelta(minutes=5)


class BadSignature(Exception):
    """The request is not provably from the source (message says why, for the log only)."""


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    *, secret: bytes, timestamp: str | None, signature: str | None, body: bytes, now: datetime
) -> None:
    """Raise ``BadSignature`` unless ``signature`` signs ``body`` at a ``timestamp`` within five
    minutes of ``now``. Checked on the raw bytes, before anything parses them."""
    if not timestamp or not signature:
        raise BadSignature("missing timestamp or signature header")
    # isascii: "²" and "٣" are digits to str.isdigit, and int() refuses the first.
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise BadSignature("timestamp is not unix seconds")
    if abs(now.timestamp() - int(timestamp)) > MAX_CLOCK_SKEW.total_seconds():
        raise BadSignature("timestamp outside the 5-minute window")
    if not hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.strip().encode()):
        raise BadSignature("signature does not match")

"""The audit trail: who read, searched, exported, held or deleted what, when, from where."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from beanie import PydanticObjectId

from store.documents import AuditEvent, Role, utcnow
from store.paging import Page, keyset_page


async def record(
    *,
    actor: str,
    role: Role | None,
    action: str,
    max_age: timedelta,
    target: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
    client_address: str | None = None,
    outcome: int = 200,
    now: datetime | None = None,
) -> AuditEvent:
    """Write one audit event; it expires (TTL index) ``max_age`` after it happened."""
    at = now or utcnow()
    event = AuditEvent(
        at=at,
        actor=actor,
        role=role,
        action=action,
        target=dict(target or {}),
        query={k: v[:500] for k, v in (query or {}).items()},
        client_address=client_address,
        outcome=outcome,
        expires_at=at + max_age,
    )
    await event.insert()
    return event


async def audit_events(
    *,
    actor: str | None = None,
    action: str | None = None,
    account_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int,
    after: tuple[datetime, PydanticObjectId] | None = None,
) -> Page[AuditEvent]:
    """Audit events, newest first, filtered; ``after`` continues from a page's last event."""
    query: dict[str, object] = {}
    if actor is not None:
        query["actor"] = actor
    if action is not None:
        query["action"] = action
    if account_id is not None:
        query["target.account_id"] = account_id
    if since is not None or until is not None:
        query["at"] = {
            **({"$gte": since} if since else {}),
            **({"$lt": until} if until else {}),
        }
    return await keyset_page(AuditEvent, query, time_field="at", limit=limit, after=after)

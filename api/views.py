"""JSON views of the documents, as the API shows them (ISO times, string ids)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from retention.forecast import ForecastItem
from retention.residue import Kind, Verdict, verdict_of
from search.engine import Hit
from store.accounts import AccountSummary, PersonErasure
from store.documents import (
    Account,
    AccountStatus,
    AttachmentRef,
    AuditEvent,
    Conversation,
    Hold,
    Message,
    PurgeRecord,
    Role,
    iso,
)
from store.reading import ConversationFiling, Filing

Json = dict[str, Any]


def attachment(ref: AttachmentRef, n: int, message_id: str) -> Json:
    return {
        "n": n,
        "filename": ref.filename,
        "content_type": ref.content_type,
        "size": ref.size,
        "sha256": ref.sha256,
        "inline": ref.inline,
        "url": f"/api/v1/messages/{message_id}/attachments/{n}",
    }


def message(m: Message) -> Json:
    ident = str(m.id)
    return {
        "id": ident,
        "conversation_id": str(m.conversation_id),
        "account_id": m.account_id,
        "channel": m.channel.value,
        "direction": m.direction.value,
        "source": m.source,
        "external_id": m.external_id,
        "subject": m.subject,
        "author": m.author.model_dump(),
        "to": [a.model_dump() for a in m.to],
        "cc": [a.model_dump() for a in m.cc],
        "sent_at": iso(m.sent_at),
        "collected_at": iso(m.collected_at),
        "archived_at": iso(m.archived_at or m.collected_at),
        "status": "filed",
        "text": m.text,
        "html": m.html,
        "body_truncated": m.body_truncated,
        "message_id_header": m.message_id_header,
        "in_reply_to": m.in_reply_to,
        "attachments": [attachment(a, n, ident) for n, a in enumerate(m.attachments)],
        "raw_url": f"/api/v1/messages/{ident}/raw" if m.raw is not None else None,
        "parse_error": m.parse_error,
        "shares_message_id": m.shares_message_id,
        "history": [
            {"text": v.text, "html": v.html, "replaced_at": iso(v.replaced_at)} for v in m.history
        ],
        "deleted_at_source": iso(m.deleted_at_source),
        "unfetched_attachments": [a.shown() for a in m.unfetched_attachments],
    }


def filing(f: Filing) -> Json:
    """An acknowledged message that is still being filed: its size and arrival, no content.
    A chat message's size is that of the webhook call carrying it, and it has no original."""
    ident = str(f.id)
    return {
        "id": ident,
        "status": "filing",
        "channel": "chat" if f.chat else "email",
        "size": f.size,
        "archived_at": iso(f.received_at),
        "raw_url": None if f.chat else f"/api/v1/messages/{ident}/raw",
    }


def conversation_filing(c: ConversationFiling) -> Json:
    """A chat conversation still being filed, with the messages its first call named."""
    return {
        "id": str(c.id),
        "status": "filing",
        "channel": "chat",
        "archived_at": iso(c.received_at),
        "messages": [filing(m) for m in c.messages],
    }


def conversation(c: Conversation, messages: list[Message]) -> Json:
    return {
        "id": str(c.id),
        "status": "filed",
        "channel": c.channel.value,
        "account_id": c.account_id,
        "source": c.source,
        "external_id": c.external_id,
        "subject": c.subject,
        "participants": c.participants,
        "message_count": c.message_count,
        "first_message_at": iso(c.first_message_at),
        "last_message_at": iso(c.last_message_at),
        "messages": [message(m) for m in messages],
    }


def hold(h: Hold, *, confidential: bool = True) -> Json:
    """A hold; its ``reason`` and ``case_ref`` (a criminal investigation's, say) only with
    ``confidential``: for compliance and admin."""
    view = {
        "id": str(h.id),
        "account_id": h.account_id,
        "conversation_id": str(h.conversation_id) if h.conversation_id else None,
        "kind": h.kind.value,
        "reason": h.reason,
        "case_ref": h.case_ref,
        "created_by": h.created_by,
        "created_at": iso(h.created_at),
        "expires_at": iso(h.expires_at),
        "released_at": iso(h.released_at),
        "released_by": h.released_by,
    }
    if not confidential:
        del view["reason"], view["case_ref"]
    return view


# Roles that see what compliance sees: a deleted account's details, a hold's reason and case.
COMPLIANCE_VIEW = frozenset({Role.COMPLIANCE, Role.ADMIN})


def account(summary: AccountSummary, *, role: Role) -> Json:
    """An account as ``role`` may see it: once deleted, agents and the platform see its status
    only (purpose limitation: its emails, name and content are no longer theirs to use)."""
    a = summary.account
    full = role in COMPLIANCE_VIEW
    if a.status is AccountStatus.DELETED and not full:
        return _account_status(a)
    return listed_account(a, role=role) | {
        "counts": {"conversations": summary.conversations, "messages": summary.messages},
        "active_holds": [hold(h, confidential=full) for h in summary.active_holds],
    }


def listed_account(a: Account, *, role: Role) -> Json:
    """An account in a list: as ``account`` shows it, without counts and holds."""
    if a.status is AccountStatus.DELETED and role not in COMPLIANCE_VIEW:
        return _account_status(a)
    view = _account_status(a) | {
        "emails": a.emails,
        "name": a.name,
        "created_at": iso(a.created_at),
        "updated_at": iso(a.updated_at),
    }
    if role in COMPLIANCE_VIEW:
        # Which life of the id this is: registering a purged id again starts a new one.
        view |= {"life": a.life, "life_started_at": iso(a.life_started_at)}
    return view


def _account_status(a: Account) -> Json:
    return {
        "id": a.id,
        "status": a.status.value,
        "deleted_at": iso(a.deleted_at),
        "purge_due_at": iso(a.purge_due_at),
        "purged_at": iso(a.purged_at),
    }


def hit(h: Hit) -> Json:
    m = h.message
    return {
        "message_id": str(m.id),
        "conversation_id": str(m.conversation_id),
        "account_id": m.account_id,
        "channel": m.channel.value,
        "subject": m.subject,
        "author": m.author.model_dump(),
        "sent_at": iso(m.sent_at),
        "snippet": h.snippet,
    }


def audit_event(e: AuditEvent) -> Json:
    return {
        "id": str(e.id),
        "at": iso(e.at),
        "actor": e.actor,
        "role": e.role.value if e.role else None,
        "action": e.action,
        "target": e.target,
        "query": e.query,
        "client_address": e.client_address,
        "outcome": e.outcome,
    }


def forecast_item(item: ForecastItem) -> Json:
    return {
        "rule": item.rule.value,
        "due_at": iso(item.due_at),
        "account_id": item.account_id,
        "messages": item.messages,
        "held_messages": item.held_messages,
        "blocked_by_holds": item.blocked_by,
    }


def purge_record(r: PurgeRecord) -> Json:
    """A purge record as proof: times, rule and counts; no personal data."""
    return {
        "id": str(r.id),
        "rule": r.rule.value,
        "due_at": iso(r.due_at),
        "started_at": iso(r.started_at),
        "done_at": iso(r.done_at),
        "counts": r.counts.model_dump(),
        # Blobs still to go (referenced within the quiet period): a later sweep removes them
        # and adds them to the counts.
        "pending_blobs": len(r.pending_blobs),
        "residue": residue(r.residue) if r.residue else None,
    }


def person_erasure(e: PersonErasure) -> Json:
    """What an erasure of a person set due: ids only (the addresses are what goes)."""
    return {
        "person_account_id": e.person,
        "account_ids": e.accounts,
        # Its certificate, once a sweep has run: the purge records of each id.
        "purge_records": [
            f"/api/v1/purge-records?account_id={quote(i, safe='')}" for i in [e.person, *e.accounts]
        ],
    }


def record_verdict(scan: dict[str, Any]) -> Verdict:
    """The verdict of a record's scan, from its findings (records written before the verdict
    was stored have the findings too)."""
    return verdict_of(Kind(f["kind"]) for f in scan["findings"])


def residue(scan: dict[str, Any]) -> Json:
    """The residue scan a purge record carries: the deletion certificate's last line."""
    return {
        "checked_at": iso(scan["checked_at"]),
        # When its blob lines were checked again, once the blobs it left pending were gone.
        "rechecked_at": iso(scan.get("rechecked_at")),
        # One word, as verify-purge's exit status: clean (0) only when nothing of the subject
        # is anywhere and nothing is pending; pending or kept (3); remains (1).
        "verdict": record_verdict(scan).value,
        "clean": record_verdict(scan) is Verdict.CLEAN,
        "residue": scan["residue"],
        "findings": [
            {**f, "until": iso(f["until"])} if f.get("until") else f for f in scan["findings"]
        ],
    }

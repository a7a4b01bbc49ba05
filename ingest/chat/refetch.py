"""Fetching again, behind the filing, the chat attachments whose server did not answer.

A message whose attachment did not come within the fetch deadline is filed without it (so
that it never holds other messages back), with the link kept in ``retry`` of its unfetched
attachment. Each round takes the messages whose ``refetch_at`` has come, fetches every due
link at once (same origins, size cap and deadline as the first time), and adds what came:
the blob, its reference, its searchable text. A link still unanswered is tried later (1 min,
then four times longer each time, for a day by default); one that fails for good, or after
the day, keeps only what is known of it and why, and its URL is forgotten.

The message is updated only if its unfetched attachments are still as read: a second process
doing the same round, an edit, or a purge in between changes nothing twice. A message whose
account is deleted is not completed (its content is on its way out).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beanie import PydanticObjectId

from ingest.attachment_text import Extract, extracted_here, kind_of
from ingest.chat.fetch import FetchPolicy, NotFetched, Unanswered, fetch_link, fetching
from store.blobs import NewAttachment, attachment_ref, put_blobs
from store.chat import AttachmentLink, refetch_at
from store.documents import Message, UnfetchedAttachment, utcnow
from store.errors import is_transient

log = logging.getLogger("archive.chat")

ROUND_MESSAGES = 50  # messages per round; the next round takes the rest


@dataclass
class Refetched:
    fetched: int = 0  # attachments that came and were added
    later: int = 0  # still unanswered: tried again later
    given_up: int = 0  # failed for good, or unanswered for too long
    messages: int = 0  # messages updated


async def refetch_due(
    policy: FetchPolicy, *, extract: Extract = extracted_here, now: datetime | None = None
) -> Refetched:
    """One round: every due link of up to ``ROUND_MESSAGES`` messages, fetched at once."""
    now = now or utcnow()
    due = {"refetch_at": {"$type": "date", "$lte": now}, "purge_due_at": None}
    fields = {"unfetched_attachments": 1, "attachment_text": 1}
    collection = Message.get_pymongo_collection()
    found = await collection.find(due, fields).sort("refetch_at", 1).to_list(ROUND_MESSAGES)
    report = Refetched()
    if not found:
        return report
    async with fetching(policy) as session:
        rounds = await asyncio.gather(*(_message(session, doc, policy, now) for doc in found))
    for doc, (kept, came, given_up) in zip(found, rounds, strict=True):
        report.fetched += len(came)
        report.later += sum(u.retry is not None for u in kept)
        report.given_up += given_up
        if await _update(doc, kept, came, extract):
            report.messages += 1
    if report.fetched or report.given_up:
        log.info("fetched again: %d attachments came, %d later, %d given up, %d messages",
                 report.fetched, report.later, report.given_up, report.messages)  # fmt: skip
    return report


async def _message(
    session: Any, doc: dict[str, Any], policy: FetchPolicy, now: datetime
) -> tuple[list[UnfetchedAttachment], list[NewAttachment], int]:
    """What stays unfetched of one message after this round, what came, and how many
    attachments were given up in this round."""
    unfetched = [UnfetchedAttachment.model_validate(u) for u in doc["unfetched_attachments"]]
    due = [u for u in unfetched if u.retry is not None and u.retry.next_at <= now]
    outcomes = await asyncio.gather(*(fetch_link(session, _link(u), policy) for u in due))
    kept = [u for u in unfetched if u not in due]
    came: list[NewAttachment] = []
    given_up = 0
    for u, outcome in zip(due, outcomes, strict=True):
        if isinstance(outcome, NotFetched):
            kept.append(_not_yet(u, outcome, policy, now))
            given_up += kept[-1].retry is None
        else:
            came.append(outcome)
    return kept, came, given_up


def _link(u: UnfetchedAttachment) -> AttachmentLink:
    assert u.retry is not None
    return AttachmentLink(url=u.retry.url, filename=u.filename, content_type=u.content_type,
                          size=u.size)  # fmt: skip


def _not_yet(
    u: UnfetchedAttachment, failure: NotFetched, policy: FetchPolicy, now: datetime
) -> UnfetchedAttachment:
    assert u.retry is not None
    attempts = u.retry.attempts + 1
    retry = (policy.retry(u.retry.url, attempts=attempts, now=now, first=u.retry)
             if isinstance(failure, Unanswered) else None)  # fmt: skip
    reason = str(failure) if retry else f"{failure}; given up after {attempts} fetches"
    return u.model_copy(update={"reason": reason, "retry": retry})


async def _update(
    doc: dict[str, Any], kept: list[UnfetchedAttachment], came: list[NewAttachment],
    extract: Extract,
) -> bool:  # fmt: skip
    """Write the round's outcome for one message, unless it changed since it was read."""
    text = doc.get("attachment_text", "")
    indexed = [a for a in came if kind_of(a.content_type, a.filename) is not None]
    if indexed:
        [more] = await extract([indexed])
        text = "\n".join(t for t in (text, more) if t)
    refs = [attachment_ref(a, ref) for a, ref in zip(came, await put_blobs([a.data for a in came]),
                                                     strict=True)]  # fmt: skip
    update: dict[str, Any] = {
        "$set": {
            "unfetched_attachments": [u.model_dump() for u in kept],
            "refetch_at": refetch_at(kept),
            "attachment_text": text,
            **({"has_attachments": True} if refs else {}),
        }
    }
    if refs:
        update["$push"] = {"attachments": {"$each": [r.model_dump() for r in refs]}}
    unchanged = {"_id": doc["_id"], "unfetched_attachments": doc["unfetched_attachments"],
                 "purge_due_at": None}  # fmt: skip
    updated = await Message.get_pymongo_collection().update_one(unchanged, update)
    if not updated.modified_count:
        log.info("message %s changed while its attachments were fetched again; next round",
                 PydanticObjectId(doc["_id"]))  # fmt: skip
    return bool(updated.modified_count)


async def refetching(
    policy: FetchPolicy, *, extract: Extract = extracted_here, every: float = 30.0
) -> None:
    """Fetch again what is due, every ``every`` seconds (at once while rounds are full),
    until cancelled. A round that fails (the database away) is tried at the next tick."""
    while True:
        try:
            report = await refetch_due(policy, extract=extract)
        except Exception as exc:
            if not is_transient(exc):
                log.exception("fetching attachments again failed; trying again in %.0fs", every)
            report = Refetched()
        if report.messages + report.later < ROUND_MESSAGES:
            await asyncio.sleep(every)

"""Chat webhook calls written to the spool, with the ids their acknowledgement names.

A call is acknowledged once its raw body is durably in the spool; the filer files it behind.
The acknowledgement names an id for each message and for the conversation, and each id must
resolve forever, so it is decided here, before the write, in this order:

1. a key (message dedup key, or conversation key) claimed by an entry still in the spool:
   that entry's id (the first copy of a message sent twice, not filed yet);
2. a message or conversation already stored: its id;
3. otherwise a new id, *claimed* in the entry written (``SpoolEntry.chat_claims``).

The spool is read before the archive because the filer writes a message before it deletes
its entry: a key missing from the spool and then from the archive was never claimed. Claims
are unique across the spool (a unique index), so two calls (two serve processes, a retry)
that both find a key unknown cannot both claim it: the second write fails on the index, and
that call looks again and names the first call's id. The filer files a claimed message and
conversation under the claimed id (``store.chat``), so a named id resolves once filed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from beanie import PydanticObjectId
from pymongo.errors import DuplicateKeyError

from store.chat import ChatBatch, chat_dedup_key
from store.documents import ChatClaim, Conversation, Message, SpoolEntry, SpoolKind
from store.spool import GroupCommit, Spool

log = logging.getLogger("archive.chat")

# A claim lost to a concurrent call is looked up again; two rounds settle any race (the
# winner's entry is durable before the loser's write fails), the third is a safety margin.
CLAIM_ROUNDS = 3


# Claim keys of conversations start with this; message dedup keys never do.
CONVERSATION = "conversation:"


def conversation_key(source: str, external_id: str) -> str:
    """The claim key of a chat conversation (distinct from every message dedup key)."""
    return f"{CONVERSATION}{source}:{external_id}"


@dataclass(frozen=True)
class ChatCall:
    """A verified and validated webhook call, as it goes to the spool (or the journal)."""

    source: str
    raw: bytes
    received_at: datetime
    conversation_id: str  # external, as the source names it
    message_ids: Sequence[str]  # external, in the call's order (repeats allowed)
    edits: bool = False  # message_updated: known messages take the new text


@dataclass(frozen=True)
class SpooledMessage:
    id: PydanticObjectId
    external_id: str
    duplicate: bool


@dataclass(frozen=True)
class SpooledChat:
    conversation_id: PydanticObjectId
    messages: list[SpooledMessage] = field(default_factory=list)
    written: bool = True  # False: every message was known and nothing to edit, no write

    @property
    def stored_any(self) -> bool:
        return any(not m.duplicate for m in self.messages)


class ChatSpool:
    """Writes chat calls to an instance's spool; lookups of concurrent calls are grouped."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._lookup: GroupCommit[list[str], dict[str, PydanticObjectId]] = GroupCommit(
            _known_ids_each, max_batch=200, max_in_flight=4
        )

    async def put(self, call: ChatCall) -> SpooledChat:
        """Write ``call`` durably (unless everything in it is known and it edits nothing)
        and return the ids its acknowledgement may name."""
        keys = _keys(call)
        for _ in range(CLAIM_ROUNDS):
            known = await self._lookup.submit(keys)
            fresh = {k: PydanticObjectId() for k in dict.fromkeys(keys) if k not in known}
            answer = _answer(call, known, fresh)
            if not fresh and not call.edits:
                return SpooledChat(answer.conversation_id, answer.messages, written=False)
            try:
                await self._spool.put_entry(_entry(call, fresh))
            except DuplicateKeyError:
                continue  # a concurrent call claimed one of the keys first: look again
            return answer
        raise RuntimeError("chat claims kept conflicting")  # not expected: see CLAIM_ROUNDS

    async def put_unparsed(self, *, source: str, raw: bytes, received_at: datetime) -> None:
        """Write a call that can no longer be parsed (a replayed journal record whose source
        or format changed meanwhile): it claims nothing, and the filer notes why it fails."""
        await self._spool.put_entry(_entry(ChatCall(source, raw, received_at, "", ()), {}))


def _keys(call: ChatCall) -> list[str]:
    return [conversation_key(call.source, call.conversation_id)] + [
        chat_dedup_key(call.source, m) for m in call.message_ids
    ]


def _answer(
    call: ChatCall, known: dict[str, PydanticObjectId], fresh: dict[str, PydanticObjectId]
) -> SpooledChat:
    ids = known | fresh
    answer = SpooledChat(ids[conversation_key(call.source, call.conversation_id)])
    named: set[str] = set()
    for external_id in call.message_ids:
        key = chat_dedup_key(call.source, external_id)
        answer.messages.append(SpooledMessage(ids[key], external_id, key in known or key in named))
        named.add(key)
    return answer


def _entry(call: ChatCall, fresh: dict[str, PydanticObjectId]) -> SpoolEntry:
    return SpoolEntry(
        id=PydanticObjectId(),
        kind=SpoolKind.CHAT,
        raw=call.raw,
        size=len(call.raw),
        received_at=call.received_at,
        owner="",  # set by Spool.put_entry
        lease_until=call.received_at,
        chat_source=call.source,
        chat_edits=call.edits,
        chat_claims=[ChatClaim(key=k, id=i) for k, i in fresh.items()] or None,
    )


async def _known_ids_each(groups: list[list[str]]) -> list[dict[str, PydanticObjectId]]:
    known = await known_ids(keys=sorted({k for keys in groups for k in keys}))
    return [{k: known[k] for k in keys if k in known} for keys in groups]


async def known_ids(*, keys: Sequence[str]) -> dict[str, PydanticObjectId]:
    """The id already given to each key that has one: claimed in the spool, else stored."""
    found = await claimed_ids(keys=keys)
    rest = [k for k in keys if k not in found]
    messages = [k for k in rest if not k.startswith(CONVERSATION)]
    if messages:
        cursor = Message.get_pymongo_collection().find(
            {"dedup_key": {"$in": messages}}, {"dedup_key": 1}
        )
        found |= {d["dedup_key"]: PydanticObjectId(d["_id"]) async for d in cursor}
    conversations = [k.split(":", 2)[1:] for k in rest if k.startswith(CONVERSATION)]
    for source in sorted({s for s, _ in conversations}):
        ids = sorted({i for s, i in conversations if s == source})
        cursor = Conversation.get_pymongo_collection().find(
            # $type lets the planner use the partial (source, external_id) index
            {"source": source, "external_id": {"$in": ids, "$type": "string"}},
            {"external_id": 1},
        )
        found |= {
            conversation_key(source, d["external_id"]): PydanticObjectId(d["_id"])
            async for d in cursor
        }
    return found


async def claimed_ids(
    *, keys: Sequence[str], besides: Sequence[PydanticObjectId] = ()
) -> dict[str, PydanticObjectId]:
    """Keys claimed by spool entries (other than ``besides``), with the claimed ids."""
    if not keys:
        return {}
    # $type lets the planner use the partial chat_claims index: an $in alone does not imply
    # its filter, and every call would read the whole spool.
    query: dict[str, object] = {"chat_claims.key": {"$in": list(keys), "$type": "string"}}
    if besides:
        query["_id"] = {"$nin": list(besides)}
    wanted = set(keys)
    found: dict[str, PydanticObjectId] = {}
    async for doc in SpoolEntry.get_pymongo_collection().find(query, {"chat_claims": 1}):
        for claim in doc["chat_claims"]:
            if claim["key"] in wanted:
                found[claim["key"]] = PydanticObjectId(claim["id"])
    return found


async def with_claimed_ids(batch: ChatBatch) -> ChatBatch:
    """``batch`` with the ids that spooled acknowledgements already named for its messages
    and conversation: a writer that files directly (the Chatwoot backfill) stores them under
    those ids, so that an id a webhook's answer named still resolves once its entry is filed
    (as a duplicate of this)."""
    keys = [chat_dedup_key(batch.source, m.external_id) for m in batch.messages]
    conversation = conversation_key(batch.source, batch.conversation_id)
    claimed = await claimed_ids(keys=[*keys, conversation])
    if not claimed:
        return batch
    messages = [
        replace(m, id=m.id or claimed.get(key)) for m, key in zip(batch.messages, keys, strict=True)
    ]
    named = batch.conversation_ref or claimed.get(conversation)
    return replace(batch, messages=messages, conversation_ref=named)

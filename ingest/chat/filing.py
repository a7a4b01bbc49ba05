"""Filing spooled chat calls: the filer's step for entries of kind ``chat``.

Each entry's body is parsed again with its source's format (it was validated before it was
acknowledged), its messages and conversation take the ids the acknowledgement named (the
entry's claims), the batches go through the optional per-batch ``prepare`` step (e.g. fetching
attachments), their attachments' text is extracted, then ``file_chats_each`` files them
together.

An entry that names a message or conversation claimed by another entry not filed in this
group waits for it (an edit spooled by one instance while the message it edits is spooled by
another): filing it first would store that message under an id no acknowledgement named.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from beanie import PydanticObjectId

from ingest.attachment_text import Extract, extracted_here, with_attachment_text
from ingest.chat.formats import Ignored
from ingest.chat.webhook import Source, parse_call
from store.chat import ChatBatch, ChatFiled, chat_dedup_key, file_chats_each
from store.chat_spool import claimed_ids, conversation_key
from store.documents import SpoolEntry

# An async step run on every group of batches before they are filed, e.g. fetching the
# attachments a Chatwoot message links to. It returns the batches to file, in order.
Prepare = Callable[[list[ChatBatch]], Awaitable[list[ChatBatch]]]


@dataclass
class ChatFilingResult:
    filed: list[tuple[SpoolEntry, ChatFiled | None]] = field(default_factory=list)
    waiting: list[SpoolEntry] = field(default_factory=list)
    failed: list[tuple[SpoolEntry, Exception]] = field(default_factory=list)


class ChatFiling:
    def __init__(
        self,
        *,
        sources: Mapping[str, Source],
        prepare: Prepare | None = None,
        extract: Extract = extracted_here,
    ) -> None:
        self._sources = sources
        self._prepare = prepare
        self._extract = extract

    async def file(self, entries: Sequence[SpoolEntry]) -> ChatFilingResult:
        """File the chat entries of one filer batch (in spool order). Raises what the
        database raises when it is away; any other failure fails its entry alone."""
        result = ChatFilingResult()
        parsed: list[tuple[SpoolEntry, ChatBatch]] = []
        for entry in entries:
            try:
                batch = self._batch_of(entry)
            except Exception as exc:
                result.failed.append((entry, exc))
                continue
            if batch is None:
                result.filed.append((entry, None))
            else:
                parsed.append((entry, batch))
        waiting = await _waiting(parsed)
        result.waiting = [e for e, _ in parsed if e.id in waiting]
        ready = [(e, b) for e, b in parsed if e.id not in waiting]
        if not ready:
            return result
        batches = [b for _, b in ready]
        if self._prepare is not None:
            batches = await self._prepare(batches)
        batches = await with_attachment_text(batches, self._extract)
        for (entry, _), filed in zip(ready, await file_chats_each(batches), strict=True):
            if isinstance(filed, Exception):
                result.failed.append((entry, filed))
            else:
                result.filed.append((entry, filed))
        return result

    def _batch_of(self, entry: SpoolEntry) -> ChatBatch | None:
        """The entry's batch with the named ids, or None for an event that files nothing."""
        source = self._sources.get(entry.chat_source or "")
        if source is None:
            raise LookupError(f"webhook source {entry.chat_source!r} is not configured")
        assert entry.raw is not None
        batch = parse_call(source, entry.raw, entry.received_at)
        if isinstance(batch, Ignored):
            return None
        named = {c.key: c.id for c in entry.chat_claims or ()}
        return replace(
            batch,
            conversation_ref=named.get(conversation_key(batch.source, batch.conversation_id)),
            messages=[
                replace(m, id=named.get(chat_dedup_key(batch.source, m.external_id)))
                for m in batch.messages
            ],
        )


async def _waiting(parsed: list[tuple[SpoolEntry, ChatBatch]]) -> set[PydanticObjectId]:
    """Entries that need a key claimed by an entry outside the group (or one that waits)."""
    needs: dict[PydanticObjectId, set[str]] = {}
    claims: dict[PydanticObjectId, set[str]] = {}
    for entry, batch in parsed:
        assert entry.id is not None
        own = {c.key for c in entry.chat_claims or ()}
        keys = {conversation_key(batch.source, batch.conversation_id)}
        keys |= {chat_dedup_key(batch.source, m.external_id) for m in batch.messages}
        needs[entry.id], claims[entry.id] = keys - own, own
    wanted = sorted({k for keys in needs.values() for k in keys})
    blocked = set(await claimed_ids(keys=wanted, besides=list(needs)))
    waiting: set[PydanticObjectId] = set()
    while True:
        more = {i for i, keys in needs.items() if i not in waiting and keys & blocked}
        if not more:
            return waiting
        waiting |= more
        blocked |= {k for i in more for k in claims[i]}

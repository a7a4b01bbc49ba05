"""Where a validated webhook call goes: the spool, or the local journal when MongoDB is away.

Webhook senders may never retry (Chatwoot does not), so a call must not get a failure just
because the database is slow or down: if the spool write does not succeed within
``SPOOL_DEADLINE`` seconds (well under Chatwoot's 5 s), the call is journaled and answered
``202``; ``replay`` puts journaled calls into the spool once the database answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from ingest.chat.formats import Ignored
from ingest.chat.webhook import Journaled, Source, call_of, parse_call
from store.chat_spool import ChatCall, ChatSpool, SpooledChat
from store.database import Database
from store.errors import is_transient
from store.journal import Journal, JournalRecord
from store.spool import SpoolFull

log = logging.getLogger("archive.chat")

# Chatwoot gives up on a webhook after 5 s; the journal's fsync must fit in what is left.
SPOOL_DEADLINE = 2.0


class ChatIntake:
    def __init__(
        self,
        *,
        spool: ChatSpool,
        journal: Journal,
        sources: Mapping[str, Source],
        deadline: float = SPOOL_DEADLINE,
    ) -> None:
        self._spool = spool
        self._journal = journal
        self._sources = sources
        self._deadline = deadline

    async def accept(self, call: ChatCall) -> SpooledChat | Journaled:
        """The call durably in the spool (with the ids to name), or else in the journal.

        While the journal holds calls not replayed yet, new calls join them there, so that
        calls reach the spool in the order they came (an edit after what it edits).
        """
        if not self._journal.pending:
            try:
                async with asyncio.timeout(self._deadline):
                    return await self._spool.put(call)
            except Exception as exc:
                if not (is_transient(exc) or isinstance(exc, SpoolFull)):
                    raise
                log.warning("%s: spool write failed (%s), journaling the call", call.source,
                            type(exc).__name__)  # fmt: skip
        await self._journal.append(JournalRecord(call.source, call.received_at, call.raw))
        return Journaled()

    async def replay_record(self, record: JournalRecord) -> None:
        """Put one journaled call into the spool (idempotent: known messages are claimed
        once, whatever the number of replays)."""
        source = self._sources.get(record.source)
        try:
            if source is None:
                raise LookupError(f"webhook source {record.source!r} is no longer configured")
            batch = parse_call(source, record.raw, record.received_at)
        except Exception as exc:
            # It was valid when it was acknowledged; it is kept in the spool (where the filer
            # retries it and notes why it fails), never dropped.
            log.error("journaled %s call no longer parses (%s); spooled unparsed",
                      record.source, type(exc).__name__)  # fmt: skip
            await self._spool.put_unparsed(
                source=record.source, raw=record.raw, received_at=record.received_at
            )
            return
        if isinstance(batch, Ignored):
            return
        await self._spool.put(call_of(source, record.raw, record.received_at, batch))

    async def replay(self) -> int:
        return await self._journal.replay(self.replay_record)


async def replaying(
    intake: ChatIntake, journal: Journal, database: Database, *, poll: float = 1.0
) -> None:
    """Replay the journal now and whenever it has records, as soon as the database answers.
    Runs until cancelled; a failed replay is tried again (what is journaled stays)."""
    backoff = poll
    while True:
        if journal.pending and await database.ping(within=poll):
            try:
                replayed = await intake.replay()
                log.info("journal replayed: %d call(s)", replayed)
                backoff = poll
            except Exception as exc:
                if not is_transient(exc) and not isinstance(exc, SpoolFull):
                    log.exception("journal replay failed; trying again in %.0fs", backoff)
                backoff = min(backoff * 2, 30.0)
        if journal.pending:
            await asyncio.sleep(backoff)
        else:
            journal.appended.clear()
            if not journal.pending:  # nothing arrived between the check and the clear
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(journal.appended.wait(), 60)

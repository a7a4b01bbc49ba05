"""Chat webhooks acknowledged after one durable write: the spool, or the local journal while
MongoDB cannot take the write in time, replayed into the spool once it can."""

from __future__ import annotations

import asyncio
import shutil
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from ingest.chat.chatwoot import CHATWOOT
from ingest.chat.filing import ChatFiling
from ingest.chat.formats import Ignored
from ingest.chat.intake import ChatIntake
from ingest.chat.webhook import Journaled, Source, call_of, parse_call
from ingest.filer import Filer
from ingest.mime import SupportSide
from service.serve import build_app
from service.settings import load_settings
from store.chat import ChatBatch, file_chats
from store.chat_spool import ChatSpool, SpooledChat, with_claimed_ids
from store.database import Database
from store.documents import Conversation, Message, SpoolEntry, utcnow
from store.journal import (
    Journal,
    JournalRecord,
    iter_journal_records,
    journal_files,
    read_segment,
)
from store.spool import Spool
from tests.chatwoot import rails_json
from tests.helpers import eventually
from tests.test_chat import (
    CHATWOOT_SECRET,
    WIDGET_SECRET,
    Client,
    assert_problem,
    chatwoot_event,
    post,
    post_chatwoot,
)

HELPDESK = Source(name="helpdesk", format=CHATWOOT, secret=CHATWOOT_SECRET.encode())
SOURCES = {"helpdesk": HELPDESK}


def call(event: dict[str, Any]) -> Any:
    """A Chatwoot call as the webhook hands it to the intake (verified and validated)."""
    raw = rails_json(event)
    now = utcnow()
    batch = parse_call(HELPDESK, raw, now)
    assert isinstance(batch, ChatBatch)
    return call_of(HELPDESK, raw, now, batch)


def filer_for(spool: Spool) -> Filer:
    return Filer(spool, support=SupportSide.parse([]), chat=ChatFiling(sources=SOURCES))


async def file_all(spool: Spool) -> None:
    filer = filer_for(spool)
    while await filer.file_once():
        pass


@asynccontextmanager
async def writes_blocked(database: Database) -> AsyncIterator[None]:
    """MongoDB answers reads but takes no write until the block is lifted (fsyncLock)."""
    await database.client.admin.command({"fsync": 1, "lock": True})
    try:
        yield
    finally:
        await database.client.admin.command("fsyncUnlock")


@pytest.fixture
async def app(database: Database, tmp_path: Path) -> AsyncIterator[Client]:
    """The app as serve builds it, its journal under ``tmp_path`` (1 MB at most)."""
    settings = load_settings(
        webhook_sources=[f"widget:generic:{WIDGET_SECRET}", f"helpdesk:chatwoot:{CHATWOOT_SECRET}"],
        data_dir=tmp_path,
        journal_max_bytes="1MB",
    )
    async with TestClient(TestServer(build_app(settings, database))) as client:
        yield client


# --- the normal path: one spool write, filed behind -----------------------------------------


async def test_a_call_is_answered_once_spooled_and_filed_behind(database: Database) -> None:
    spool = Spool()
    intake = ChatIntake(spool=ChatSpool(spool), journal=Journal(Path("/nonexistent"),
                        max_bytes=10**6), sources=SOURCES)  # fmt: skip
    answer = await intake.accept(call(chatwoot_event()))
    assert isinstance(answer, SpooledChat) and answer.stored_any
    [named] = answer.messages
    # Acknowledged: the body is in the spool, nothing is filed yet.
    [entry] = await SpoolEntry.find_all().to_list()
    assert entry.raw == rails_json(chatwoot_event())
    assert await Message.count() == 0

    await file_all(spool)
    message = await Message.get(named.id)
    assert message is not None and message.external_id == "1/501"
    assert (await Conversation.get(answer.conversation_id)) is not None
    assert await SpoolEntry.count() == 0


async def test_a_call_for_a_stored_message_names_the_stored_id(app: Client) -> None:
    first = await (await post_chatwoot(app, chatwoot_event())).json()
    again = await post_chatwoot(app, chatwoot_event())
    assert again.status == 200
    answer = await again.json()
    assert answer["messages"][0] == {**first["messages"][0], "duplicate": True}
    assert answer["conversation_id"] == first["conversation_id"]
    assert await Message.count() == 1
    assert await SpoolEntry.count() == 0  # nothing new: not even written to the spool


async def test_a_message_sent_twice_before_it_is_filed_is_named_by_its_first_id(
    database: Database,
) -> None:
    spool = Spool()
    intake = ChatSpool(spool)
    first = await intake.put(call(chatwoot_event()))
    second = await intake.put(call(chatwoot_event()))
    assert second.messages[0].id == first.messages[0].id and second.messages[0].duplicate
    await file_all(spool)
    assert [m.id for m in await Message.find_all().to_list()] == [first.messages[0].id]


async def test_two_instances_given_the_same_new_message_at_once_name_one_id(
    database: Database,
) -> None:
    # Two serve processes, each with its spool, receive the same message at the same time:
    # only one claim can be written, and the other call names the winner's id.
    spools = [Spool(), Spool()]
    answers = await asyncio.gather(*(ChatSpool(s).put(call(chatwoot_event())) for s in spools))
    assert len({a.messages[0].id for a in answers}) == 1
    assert sorted(a.messages[0].duplicate for a in answers) == [False, True]
    assert len({a.conversation_id for a in answers}) == 1
    for spool in spools:
        await file_all(spool)
    message = await Message.get(answers[0].messages[0].id)
    assert message is not None and await Message.count() == 1
    assert message.conversation_id == answers[0].conversation_id


async def test_an_edit_spooled_with_its_message_is_applied_after_it(database: Database) -> None:
    spool = Spool()
    intake = ChatSpool(spool)
    created = await intake.put(call(chatwoot_event(content="my order is 1243")))
    edited = await intake.put(call(chatwoot_event("message_updated", content="order 1234")))
    assert edited.messages[0].id == created.messages[0].id
    await file_all(spool)
    message = await Message.get(created.messages[0].id)
    assert message is not None and message.text == "order 1234"
    assert [v.text for v in message.history] == ["my order is 1243"]


async def test_an_edit_waits_for_its_message_spooled_by_another_instance(
    database: Database,
) -> None:
    mine, theirs = Spool(), Spool()
    created = await ChatSpool(theirs).put(call(chatwoot_event(content="first")))
    await ChatSpool(mine).put(call(chatwoot_event("message_updated", content="second")))
    filer = filer_for(mine)
    await filer.file_once()
    assert await Message.count() == 0, "the edit was filed before the message it edits"
    await file_all(theirs)
    await eventually(lambda: _filed_once(filer), timeout=10)
    message = await Message.get(created.messages[0].id)
    assert message is not None and message.text == "second"


async def _filed_once(filer: Filer) -> bool:
    await filer.file_once()
    return await SpoolEntry.count() == 0


# --- the journal ----------------------------------------------------------------------------


async def test_a_call_the_database_cannot_take_in_time_is_journaled_and_answered_202(
    app: Client, database: Database, tmp_path: Path
) -> None:
    async with writes_blocked(database):
        response = await post_chatwoot(app, chatwoot_event(), filed=False)
        assert response.status == 202
        assert await response.json() == {
            "journaled": True,
            "conversation_external_id": "1/3",
            "messages": [{"external_id": "1/501"}],
        }
        [segment] = journal_files(tmp_path)
        assert list(iter_journal_records(tmp_path)) == [rails_json(chatwoot_event())]
        # It holds personal data: owner-only.
        assert stat.S_IMODE(segment.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(segment.stat().st_mode) == 0o600

    async def replayed_and_filed() -> bool:
        return await Message.count() == 1 and not journal_files(tmp_path)

    await eventually(replayed_and_filed, timeout=60)
    assert await Message.find({"external_id": "1/501"}).count() == 1


async def test_past_the_journal_bound_a_call_gets_503_with_retry_after(
    app: Client, database: Database, tmp_path: Path
) -> None:
    # Each body carries its text three times (content, and the conversation's last message's
    # content and processed_message_content): some 900 kB, of a 1 MB journal.
    big = chatwoot_event(content="x" * 300_000)
    async with writes_blocked(database):
        assert (await post_chatwoot(app, big, filed=False)).status == 202
        response = await post_chatwoot(app, chatwoot_event(message_id=502, content="y" * 300_000),
                                       filed=False)  # fmt: skip
        await assert_problem(response, 503)
        assert int(response.headers["Retry-After"]) > 0
        assert len(list(iter_journal_records(tmp_path))) == 1


async def test_while_the_journal_has_calls_new_calls_join_them_in_order(
    database: Database, tmp_path: Path
) -> None:
    # The message was journaled while the database was away; it is back, and the edit comes
    # before the replay: it must not overtake the message it edits.
    journal = Journal(tmp_path, max_bytes=10**6)
    await journal.append(JournalRecord("helpdesk", utcnow(), _raw(content="first")))
    spool = Spool()
    intake = ChatIntake(spool=ChatSpool(spool), journal=journal, sources=SOURCES)
    edit = await intake.accept(call(chatwoot_event("message_updated", content="second")))
    assert isinstance(edit, Journaled) and await SpoolEntry.count() == 0
    assert await intake.replay() == 2
    await file_all(spool)
    message = await Message.find_one()
    assert message is not None and message.text == "second"
    assert [v.text for v in message.history] == ["first"]


def test_a_torn_last_record_is_skipped_and_the_records_before_it_kept(tmp_path: Path) -> None:
    records = [JournalRecord("helpdesk", utcnow(), f"body {n}".encode()) for n in range(3)]
    data = b"".join(r.encode() for r in records)
    torn = JournalRecord("helpdesk", utcnow(), b"the call being appended").encode()
    for cut in (3, 12, len(torn) - 1):  # in the header, in the payload, its last byte
        found, skipped = read_segment(data + torn[:cut])
        assert [r.raw for r in found] == [r.raw for r in records]
        assert skipped == 1


def test_a_corrupt_record_loses_only_itself(tmp_path: Path) -> None:
    records = [JournalRecord("helpdesk", utcnow(), f"body {n}".encode()) for n in range(3)]
    encoded = [r.encode() for r in records]
    encoded[1] = encoded[1][:-1] + b"!"  # a bit flipped on disk
    found, skipped = read_segment(b"".join(encoded))
    assert [r.raw for r in found] == [b"body 0", b"body 2"] and skipped == 1


async def test_a_journal_with_a_torn_record_replays_the_others(
    database: Database, tmp_path: Path
) -> None:
    journal = Journal(tmp_path, max_bytes=10**6)
    for n in range(3):
        await journal.append(JournalRecord("helpdesk", utcnow(), _raw(message_id=n)))
    journal.close()
    [segment] = journal_files(tmp_path)
    with segment.open("ab") as file:  # the crash in the middle of an append
        file.write(JournalRecord("helpdesk", utcnow(), _raw(message_id=9)).encode()[:40])
    spool = Spool()
    restarted = Journal(tmp_path, max_bytes=10**6)  # as at the next start
    assert restarted.pending_records == 3
    intake = ChatIntake(spool=ChatSpool(spool), journal=restarted, sources=SOURCES)
    assert await intake.replay() == 3
    await file_all(spool)
    assert sorted(m.external_id for m in await Message.find_all().to_list()) == [
        "1/0", "1/1", "1/2"]  # fmt: skip
    assert journal_files(tmp_path) == [] and not restarted.pending


async def test_replaying_a_journal_twice_stores_each_call_once(
    database: Database, tmp_path: Path
) -> None:
    journal = Journal(tmp_path, max_bytes=10**6)
    await journal.append(JournalRecord("helpdesk", utcnow(), _raw(content="first")))
    await journal.append(JournalRecord("helpdesk", utcnow(), _raw(message_id=2)))
    await journal.append(JournalRecord("helpdesk", utcnow(), _raw("message_updated")))
    journal.close()
    [segment] = journal_files(tmp_path)
    copy = shutil.copy(segment, tmp_path / "copy")
    spool = Spool()
    intake = ChatIntake(spool=ChatSpool(spool), journal=Journal(tmp_path, max_bytes=10**6),
                        sources=SOURCES)  # fmt: skip
    assert await intake.replay() == 3
    await file_all(spool)
    # A crash after the spool writes and before the segment was deleted: replayed again.
    shutil.move(copy, segment)
    intake = ChatIntake(spool=ChatSpool(spool), journal=Journal(tmp_path, max_bytes=10**6),
                        sources=SOURCES)  # fmt: skip
    assert await intake.replay() == 3
    await file_all(spool)
    messages = {m.external_id: m for m in await Message.find_all().to_list()}
    assert sorted(messages) == ["1/2", "1/501"]
    assert messages["1/501"].text == "Hello, is my order shipped?"
    assert [v.text for v in messages["1/501"].history] == ["first"]
    assert (await Conversation.find_one()).message_count == 2  # type: ignore[union-attr]


async def test_a_journaled_call_is_acknowledged_without_ids(tmp_path: Path) -> None:
    # No database at all: the journal alone answers.
    journal = Journal(tmp_path, max_bytes=10**6)
    intake = ChatIntake(spool=ChatSpool(Spool()), journal=journal, sources=SOURCES)
    await journal.append(JournalRecord("helpdesk", utcnow(), b"{}"))  # pending: joins it
    assert isinstance(await intake.accept(call(chatwoot_event())), Journaled)
    assert journal.pending_records == 2


async def test_journal_counts_reach_metrics(app: Client, database: Database) -> None:
    before = REGISTRY.get_sample_value("archive_journal_appended_total") or 0.0
    async with writes_blocked(database):
        await post(app, {"conversation": {"id": "c"}, "messages": [{
            "id": "m", "author": {"role": "customer"}, "text": "hi",
            "sent_at": "2026-11-24T09:00:00Z"}]}, filed=False)  # fmt: skip
        text = await (await app.get("/metrics")).text()
        assert "archive_journal_pending_records 1.0" in text
    assert REGISTRY.get_sample_value("archive_journal_appended_total") == before + 1
    assert "archive_journal_replayed_total" in text


def _raw(event: str = "message_created", **fields: Any) -> bytes:
    return rails_json(chatwoot_event(event, **fields))


async def test_a_backfill_of_a_message_still_in_the_spool_keeps_the_ids_its_answer_named(
    database: Database, tmp_path: Path
) -> None:
    """Backfill files directly while a webhook's call waits in the spool: the ids the
    webhook's answer named are the ones stored."""
    spool = Spool()
    intake = ChatIntake(spool=ChatSpool(spool), journal=Journal(tmp_path, max_bytes=10**6),
                        sources=SOURCES)  # fmt: skip
    answer = await intake.accept(call(chatwoot_event()))
    [named] = answer.messages
    batch = parse_call(HELPDESK, rails_json(chatwoot_event()), utcnow())
    assert not isinstance(batch, Ignored)
    await file_chats([await with_claimed_ids(batch)])  # what backfill does
    filer = Filer(spool, support=SupportSide.parse([]), chat=ChatFiling(sources=SOURCES))
    while await filer.file_once():
        pass
    assert await Message.get(named.id) is not None
    assert await Conversation.get(answer.conversation_id) is not None
    assert await Message.count() == 1


async def test_a_call_that_cannot_be_filed_after_its_attempts_is_filed_unread_under_its_ids(
    database: Database, tmp_path: Path
) -> None:
    """Its source was removed from the configuration before the filer got to it: the ids its
    answer named resolve to messages noting the error, with the call's body attached."""
    spool = Spool()
    intake = ChatIntake(spool=ChatSpool(spool), journal=Journal(tmp_path, max_bytes=10**6),
                        sources=SOURCES)  # fmt: skip
    answer = await intake.accept(call(chatwoot_event()))
    [named] = answer.messages
    filer = Filer(spool, support=SupportSide.parse([]), chat=ChatFiling(sources={}),
                  max_attempts=1, retry_base=timedelta(0))  # fmt: skip
    while await filer.file_once():
        pass
    assert await SpoolEntry.count() == 0
    message = await Message.get(named.id)
    assert message is not None and message.channel.value == "chat"
    assert message.parse_error and "not configured" in message.parse_error
    assert [a.filename for a in message.attachments] == ["webhook-call.json"]
    assert await Conversation.get(answer.conversation_id) is not None

"""Acknowledge once durable, file behind: the group commit, the spool, the filer, batch filing."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from beanie import PydanticObjectId

from ingest.filer import Filer
from ingest.mime import parse_email
from ingest.smtp import smtp_server
from store.accounts import mark_deleted, register_account
from store.database import Database
from store.documents import Blob, Conversation, Message, SpoolEntry, utcnow
from store.messages import NewEmail, file_emails
from store.spool import GroupCommit, Spool
from tests.mail import SUPPORT, handler, make_email, running, send, stored


def email(raw: bytes) -> NewEmail:
    return parse_email(raw, support=SUPPORT, received_at=utcnow())


# --- group commit ---------------------------------------------------------------------------


async def test_concurrent_items_share_writes_and_every_caller_resumes_after_its_own() -> None:
    batches: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        await asyncio.sleep(0.01)  # a round trip, during which the next items gather
        batches.append(items)
        return [n * n for n in items]

    commit: GroupCommit[int, int] = GroupCommit(write, max_batch=40)
    results = await asyncio.gather(*(commit.submit(n) for n in range(100)))
    assert results == [n * n for n in range(100)]  # each caller gets its own result
    assert sorted(n for batch in batches for n in batch) == list(range(100))
    assert len(batches) < 10
    assert max(len(batch) for batch in batches) <= 40


async def test_a_failed_write_fails_its_callers_and_not_the_next_batch() -> None:
    async def write(items: list[str]) -> list[str]:
        await asyncio.sleep(0.01)
        if "bad" in items:
            raise ConnectionError("database went away")
        return items

    commit: GroupCommit[str, str] = GroupCommit(write)
    first = await asyncio.gather(commit.submit("bad"), commit.submit("ok-1"),
                                 return_exceptions=True)  # fmt: skip
    assert [type(r) for r in first] == [ConnectionError, ConnectionError]
    assert await commit.submit("ok-2") == "ok-2"


async def test_an_item_the_write_fails_alone_fails_only_its_caller() -> None:
    async def write(items: list[str]) -> list[str | Exception]:
        await asyncio.sleep(0.01)
        return [ValueError(item) if item == "bad" else item for item in items]

    commit: GroupCommit[str, str] = GroupCommit(write)
    results = await asyncio.gather(commit.submit("ok"), commit.submit("bad"),
                                   return_exceptions=True)  # fmt: skip
    assert results[0] == "ok"
    assert isinstance(results[1], ValueError)


# --- batch filing ---------------------------------------------------------------------------


async def test_a_reply_filed_in_the_same_batch_as_its_question_joins_its_thread(
    database: Database,
) -> None:
    question = make_email(message_id="<q@example.com>")
    answer = make_email(sender="maya@shop.example", to="ann@example.com",
                        message_id="<a@shop.example>", in_reply_to="<q@example.com>")  # fmt: skip
    one, two = await file_emails([email(question), email(answer)])
    assert not one.duplicate and not two.duplicate
    assert one.conversation_id == two.conversation_id
    [conversation] = await Conversation.find_all().to_list()
    assert conversation.message_count == 2


async def test_a_message_twice_in_one_batch_is_stored_once(database: Database) -> None:
    raw = make_email()
    one, two = await file_emails([email(raw), email(raw)])
    assert (one.duplicate, two.duplicate) == (False, True)
    assert two.message_id == one.message_id
    assert await Message.count() == 1


async def test_each_message_of_a_batch_is_linked_to_its_own_customer(database: Database) -> None:
    await register_account(account_id="ann-old", emails=["ann@example.com"], name=None)
    await mark_deleted(account_id="ann-old", deleted_at=utcnow(), grace=timedelta(days=180))
    await register_account(account_id="ann", emails=["ann@example.com"], name=None)
    await register_account(account_id="bob", emails=["bob@example.org"], name=None)
    batch = [
        make_email(message_id="<1@x>"),
        make_email(sender="bob@example.org", message_id="<2@x>"),
        make_email(sender="nobody@example.net", message_id="<3@x>"),
    ]
    filed = await file_emails([email(raw) for raw in batch])
    # A live account before an older, deleted one with the same address; no account, no link.
    assert [f.account_id for f in filed] == ["ann", "bob", None]


# --- the spool and the filer ----------------------------------------------------------------


async def test_a_250_means_the_message_is_in_the_database_before_it_is_filed(
    database: Database,
) -> None:
    spool = Spool()
    async with smtp_server(handler(spool), host="127.0.0.1", port=0,
                           max_message_bytes=65536) as server:  # fmt: skip
        code, reply = await send(server.sockets[0].getsockname()[1], make_email())
    assert code == 250
    [entry] = await SpoolEntry.find_all().to_list()
    assert entry.raw == make_email() and str(entry.id) in reply
    assert await Message.count() == 0
    await Filer(spool, support=SUPPORT).file_once()
    assert (await stored(reply)).message_id_header == "order-1234@example.com"
    assert await SpoolEntry.count() == 0


async def test_when_the_spool_is_full_mail_gets_451_and_is_not_taken(database: Database) -> None:
    spool = Spool(max_backlog=1)
    async with smtp_server(handler(spool), host="127.0.0.1", port=0,
                           max_message_bytes=65536) as server:  # fmt: skip
        port = server.sockets[0].getsockname()[1]
        assert (await send(port, make_email(message_id="<1@x>")))[0] == 250
        code, reply = await send(port, make_email(message_id="<2@x>"))
    assert (code, reply[:5]) == (451, "4.3.1")
    assert await SpoolEntry.count() == 1


async def test_deliveries_of_a_dead_instance_are_taken_over_and_filed(
    database: Database,
) -> None:
    dead = Spool(lease=timedelta(0))  # its lease runs out at once: it never renews it
    queued = await dead.put_email(make_email(), envelope=None, received_at=utcnow())
    survivor = Spool()
    assert await survivor.take_over() == 1
    await Filer(survivor, support=SUPPORT).file_once()
    assert await Message.get(queued) is not None
    assert await SpoolEntry.count() == 0


async def test_an_entry_filed_again_after_a_crash_is_stored_once(spool: Spool) -> None:
    # A crash between filing and forgetting the entry: the next run files it again.
    queued = await spool.put_email(make_email(), envelope=None, received_at=utcnow())
    [entry] = await SpoolEntry.find_all().to_list()
    filer = Filer(spool, support=SUPPORT)
    await filer.file_once()
    await SpoolEntry.get_pymongo_collection().insert_one(entry.model_dump(by_alias=True))
    await filer.file_once()
    assert [m.id for m in await Message.find_all().to_list()] == [queued]
    assert await SpoolEntry.count() == 0


async def test_an_entry_that_cannot_be_filed_stays_and_does_not_block_the_others(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    lost = await spool.put_email(b"x" * 5_000_000, envelope=None, received_at=utcnow())
    entry = await SpoolEntry.get(lost)
    assert entry is not None and entry.raw_sha256 is not None
    await Blob.find_all().delete()  # its large raw copy is gone (an operator's mistake)
    fine = await spool.put_email(make_email(), envelope=None, received_at=utcnow())
    filer = Filer(spool, support=SUPPORT)
    await filer.file_once()  # the 5 MB delivery fills a batch of its own (BATCH_BYTES)
    await filer.file_once()
    assert await Message.get(fine) is not None
    left = await SpoolEntry.get(lost)
    assert left is not None and left.attempts == 1 and "NotFound" in (left.last_error or "")
    assert "could not file spooled delivery" in caplog.text
    assert await filer.file_once() == 0  # not retried at once: it waits its backoff


async def test_serve_files_what_it_accepted_before_it_stops(spool: Spool) -> None:
    async with running(spool) as port:
        replies = await asyncio.gather(*(send(port, make_email(message_id=f"<s{n}@x>"))
                                         for n in range(20)))  # fmt: skip
    # Leaving ``running`` is serve's shutdown: SMTP closes, then the filer empties the spool.
    assert await SpoolEntry.count() == 0
    ids = {PydanticObjectId(r.split()[-1]) for _, r in replies}
    assert {m.id for m in await Message.find_all().to_list()} == ids


async def test_a_claim_bounded_in_bytes_takes_the_oldest_that_fit_and_always_one(
    spool: Spool,
) -> None:
    for n in range(4):
        await spool.put_email(b"x" * 1000 + str(n).encode(), envelope=None, received_at=utcnow())
    assert [e.size for e in await spool.claim(10, max_bytes=2500)] == [1001, 1001]
    assert len(await spool.claim(10, max_bytes=10)) == 1  # a large delivery is still filed
    assert len(await spool.claim(10)) == 4


async def test_a_claim_bounded_in_bytes_exempts_only_the_first_entry_after_empty_ones(
    spool: Spool,
) -> None:
    for body in (b"", b"", b"x" * 1000, b"y" * 1000):
        await spool.put_email(body, envelope=None, received_at=utcnow())
    assert [e.size for e in await spool.claim(10, max_bytes=10)] == [0, 0]

"""The residue scan of a batch of purges: each account gets exactly what a scan of it alone
finds, for round trips to MongoDB that do not grow with the batch, one walk of the spool, one
read of each file and one look at the search index."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from beanie import PydanticObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from retention import residue
from retention.holds import place_hold
from retention.residue import Identifiers, Kind, Residue, scan, scan_many
from search.index import SearchIndex, following
from store import audit
from store.accounts import register_account
from store.blobs import put_blob
from store.database import Database
from store.documents import (
    Account,
    AccountStatus,
    Blob,
    BlobChunk,
    Conversation,
    Envelope,
    Export,
    Hold,
    HoldKind,
    Message,
    Role,
    utcnow,
)
from store.embedded import EmbeddedMongo
from store.spool import Spool
from tests.conftest import report
from tests.factories import chat, email
from tests.helpers import counting

QUIET = timedelta(days=1)


def captured(identifiers: Identifiers, *messages: Message) -> Identifiers:
    """What a purge captures of the messages it deletes: their ids, conversations and blobs."""
    for m in messages:
        assert m.id is not None
        identifiers.message_ids.add(m.id)
        identifiers.conversation_ids.add(m.conversation_id)
        identifiers.blobs |= {a.sha256 for a in m.attachments}
        identifiers.blobs |= {m.raw.sha256} if m.raw else set()
    return identifiers


async def account(account_id: str, name: str | None = None) -> Identifiers:
    registered = await register_account(account_id=account_id, emails=[f"{account_id}@example.com"],
                                        name=name)  # fmt: skip
    return Identifiers.of_account(registered)


async def hold(database: Database, **scope: Any) -> None:
    await place_hold(database, **({"account_id": None, "conversation_id": None} | scope),
                     kind=HoldKind.DISPUTE, reason="case", case_ref=None, expires_at=None,
                     created_by="legal")  # fmt: skip


async def deliver(spool: Spool, *, mail_from: str, body: str) -> None:
    """A delivery accepted and not filed yet."""
    raw = f"From: {mail_from}\r\nTo: support@shop.example\r\n\r\n{body}\r\n".encode()
    envelope = Envelope(mail_from=mail_from, rcpt_tos=["support@shop.example"],
                        client_address="127.0.0.1")  # fmt: skip
    await spool.put_email(raw, envelope=envelope, received_at=utcnow())


async def tombstone(account_id: str) -> None:
    """The account as a purge leaves it: deleted, purged now, without addresses or name."""
    await Account.get_pymongo_collection().update_one({"_id": account_id}, {"$set": {
        "status": AccountStatus.DELETED.value, "purged_at": utcnow(), "emails": [],
        "name": None}})  # fmt: skip


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


async def singly(batch: list[Identifiers], **kw: Any) -> list[Residue]:
    return [await scan(each, **kw) for each in batch]


def found(residue: Residue) -> set[tuple[str, int, Kind]]:
    return {(f.place, f.count, f.kind) for f in residue.findings}


# --- each account as if scanned alone -------------------------------------------------------


async def varied_residue(database: Database, spool: Spool, data_dir: Path) -> dict[str, Any]:
    """Accounts with one kind of residue each (as a purge that went wrong, or a hold, leaves
    them), two sharing an address, and what each scan must find of it."""
    ann = await account("ann", "Ann Customer")  # a message left behind, its conversation too
    captured(ann, await chat("left behind", account_id="ann", conversation="ann-chat"))
    await Message.get_pymongo_collection().update_many(
        {"account_id": "ann"}, {"$set": {"purge_due_at": utcnow() - timedelta(minutes=1)}}
    )
    bob = await account("bob")  # a conversation on hold
    held = await chat("disputed", account_id="bob", conversation="bob-chat")
    await hold(database, conversation_id=held.conversation_id)
    cyd = captured(await account("cyd"), await chat("kept", account_id="cyd", conversation="c"))
    await hold(database, account_id="cyd")  # the whole account on hold
    captured(bob, held)

    dot = await account("dot")  # blobs: pending, loose, shared, and chunks of a gone one
    gone = await email(account_id="dot", sender="dot@example.com",
                       attachments=[("a.pdf", "application/pdf", b"%PDF-dot")])  # fmt: skip
    captured(dot, gone)
    await Message.get_pymongo_collection().delete_one({"_id": gone.id})
    await Conversation.get_pymongo_collection().delete_one({"_id": gone.conversation_id})
    loose = await put_blob(b"bytes nobody refers to")
    await Blob.get_pymongo_collection().update_one(
        {"_id": loose.sha256}, {"$set": {"last_referenced_at": utcnow() - 2 * QUIET}}
    )
    eve = await account("eve")  # an export record left, and a message that stays
    stays = await email(account_id="eve", sender="eve@example.com",
                        attachments=[("b.pdf", "application/pdf", b"%PDF-eve")])  # fmt: skip
    await BlobChunk(blob_id="f" * 64, n=0, data=b"x").insert()
    dot.blobs |= {loose.sha256, stays.attachments[0].sha256, "f" * 64}
    await Export(account_id="eve", created_by="test", expires_at=utcnow() + QUIET).insert()
    await tombstone("eve")  # purged, its export left behind

    fay = await account("fay", "Fay Fairweather")  # the audit trail's free text names her
    for query in ({"q": "refund FAY@example.com"}, {"participant": "fairweather fay"}):
        await audit.record(actor="agent-key", role=Role.AGENT, action="search", query=query,
                           target={"account_id": "fay"}, max_age=timedelta(days=30))  # fmt: skip
    await tombstone("fay")  # purged, the free text before it not redacted
    gus = await account("gus")  # files, a log and the spool name him
    write(data_dir / "journal" / "1.journal", '{"email": "GUS@EXAMPLE.COM"}')
    write(data_dir / "mongo" / "mongod.log", '{"filter": {"participants": "gus@example.com"}}')
    await deliver(spool, mail_from="someone@else.example", body="about gus, please")
    await deliver(spool, mail_from="DOT@example.com", body="hello")

    hal, ivy = await account("hal"), await account("ivy")  # one address was once theirs both
    for each in (hal, ivy):
        each.emails.add("shared@example.com")
    await email(sender="Shared Person <shared@example.com>")
    write(data_dir / "notes" / "call.txt", "call shared@example.com back")
    walk_in = Identifiers(emails={"walk-in@example.com"})  # an address with no account
    await email(sender="walk-in@example.com")
    await deliver(spool, mail_from="walk-in@example.com", body="me again")

    joann = await account("joann")  # her address holds ann's words: counts for both
    write(data_dir / "notes" / "joann.txt", "joann@example.com")
    write(data_dir / "mongo" / "mongod.log.2026-11-24T10-00-00", '"joann@example.com"')
    kim = await account("kim", "Kim")  # a tombstone, as a purge leaves it
    await tombstone("kim")
    lea = await account("lea", "Lea Lind")  # active: her trail is her live account's
    await audit.record(actor="agent-key", role=Role.AGENT, action="search",
                       query={"q": "lea@example.com"}, max_age=timedelta(days=30))  # fmt: skip
    max_ = await account("max", "Max Mustermann")  # purged, named in a hold's reason
    await tombstone("max")
    await Hold(account_id="other", kind=HoldKind.DISPUTE, created_by="legal",
               reason="refund for Mustermann (max@example.com)").insert()  # fmt: skip
    ned = await account("ned")  # purged, a disclosure of his conversation left behind
    disclosed = await chat("disclosed", account_id="ned", conversation="ned-chat")
    captured(ned, disclosed)
    await Message.get_pymongo_collection().delete_one({"_id": disclosed.id})
    await Conversation.get_pymongo_collection().delete_one({"_id": disclosed.conversation_id})
    await Export(hold_id=PydanticObjectId(), conversation_ids=[disclosed.conversation_id],
                 created_by="test", expires_at=utcnow() + QUIET).insert()  # fmt: skip
    await tombstone("ned")
    write(data_dir / "exports" / f"{'0' * 24}.zip", "PK")  # every scan sees this one
    recheck = Identifiers(blobs={loose.sha256})  # as a purge re-checks its pending blobs

    r, h, k, p, s = Kind.RESIDUE, Kind.HELD, Kind.KEPT, Kind.PENDING, Kind.SHARED
    return {
        "ann": (ann, {("messages", 1, r), ("conversations", 1, r), ("data folder", 1, r)}),
        "bob": (bob, {("messages", 1, h), ("conversations", 1, h)}),
        "cyd": (cyd, {("messages", 1, h), ("conversations", 1, h), ("holds", 1, k)}),
        "dot": (dot, {("blobs", 2, p), ("blobs", 1, r), ("blobs", 1, s), ("blob_chunks", 1, r),
                      ("spool", 1, r)}),
        "eve": (eve, {("exports", 1, r)}),
        "fay": (fay, {("audit_events", 2, r), ("audit_events", 2, k)}),
        "gus": (gus, {("data folder", 1, r), ("mongod log", 1, r), ("spool", 1, r)}),
        "hal": (hal, {("messages", 1, r), ("conversations", 1, s), ("data folder", 1, r)}),
        "ivy": (ivy, {("messages", 1, r), ("conversations", 1, s), ("data folder", 1, r)}),
        "walk-in": (walk_in, {("messages", 1, r), ("spool", 1, r)}),
        "joann": (joann, {("data folder", 1, r), ("mongod log", 1, r)}),
        "kim": (kim, {("accounts", 1, k)}),
        "lea": (lea, {("audit_events", 1, k)}),
        "max": (max_, {("holds and disclosures", 1, r)}),
        "ned": (ned, {("exports", 1, r)}),
        "recheck": (recheck, {("blobs", 1, r)}),
    }  # fmt: skip


async def test_a_batch_finds_for_each_account_exactly_what_a_scan_of_it_alone_finds(
    database: Database, spool: Spool, tmp_path: Path
) -> None:
    cases = await varied_residue(database, spool, tmp_path)
    batch = [identifiers for identifiers, _ in cases.values()]
    # A moment after the purge captured what identified its content.
    kw: dict[str, Any] = {"now": utcnow() + timedelta(seconds=2), "quiet_period": QUIET,
                          "data_dir": tmp_path}  # fmt: skip

    many = await scan_many(batch, **kw)

    alone = await singly(batch, **kw)
    for (name, (_, expected)), each, one in zip(cases.items(), many, alone, strict=True):
        assert each == one, (name, each.lines(), one.lines())
        assert expected <= found(each), (name, each.lines())
        assert ("exports folder", 1, Kind.RESIDUE) in found(each), name
    # joann's address names ann in the data folder (any substring counts there), not in
    # mongod's log (whole words only).
    assert ("mongod log", 1, Kind.RESIDUE) not in found(many[0])


async def test_a_batch_of_one_account_twice_gives_it_twice(
    database: Database, spool: Spool, tmp_path: Path
) -> None:
    """Identifiers may repeat (an account in two purge records): each counts on its own."""
    cases = await varied_residue(database, spool, tmp_path)
    hal = cases["hal"][0]
    kw: dict[str, Any] = {"now": utcnow() + timedelta(seconds=2), "quiet_period": QUIET,
                          "data_dir": tmp_path}  # fmt: skip
    twice = await scan_many([hal, hal], **kw)
    assert twice[0] == twice[1] == await scan(hal, **kw)
    assert twice[0].unexplained == 3


# --- the combined search of texts ------------------------------------------------------------


def own_pattern(words: list[str], *, whole_words: bool) -> re.Pattern[bytes]:
    """A scan's own pattern, as the scan of one account searched a text before batches."""
    either = b"|".join(re.escape(w.encode()) for w in sorted(words) if w)
    if whole_words:
        return re.compile(rb"\b(?:" + either + rb")\b" if either else b"(?!)", re.IGNORECASE)
    return re.compile(either or b"(?!)", re.IGNORECASE)


_LETTERS = st.text(alphabet="aAbB.@ _-1é", max_size=5)


@settings(max_examples=500, deadline=None)
@given(
    words=st.lists(st.lists(_LETTERS, max_size=3), min_size=1, max_size=5),
    text=st.text(alphabet="aAbB.@ _-1é", max_size=40),
    whole_words=st.booleans(),
)
def test_one_search_of_a_text_finds_for_each_scan_what_its_own_pattern_finds(
    words: list[list[str]], text: str, whole_words: bool
) -> None:
    """Words that begin or lie inside one another (``ann``, ``joann@example.com``), in any
    case, as whole words or not: the batch's one search tells each scan what its own did."""
    needles = residue._Needles(words, whole_words=whole_words)
    data = text.encode()
    expected = {place for place, each in enumerate(words)
                if own_pattern(each, whole_words=whole_words).search(data)}  # fmt: skip
    assert needles.owners(needles.found_in(data)) == expected


async def test_a_batch_reads_each_file_once(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = [await account(f"acct-{n:02d}", f"Person {n}") for n in range(40)]
    for n in range(0, 40, 4):
        write(tmp_path / "journal" / f"{n}.journal", f'{{"email": "acct-{n:02d}@example.com"}}')
    write(tmp_path / "mongo" / "mongod.log", '"acct-07@example.com" "person 9"')
    write(tmp_path / "mongo" / "mongod.log.1", "nobody")
    files = {p for p in tmp_path.rglob("*") if p.is_file()}
    opened: Counter[Path] = Counter()
    real_open = Path.open

    def counting_open(self: Path, *args: Any, **kw: Any) -> Any:
        if self.is_relative_to(tmp_path):
            opened[self] += 1
        return real_open(self, *args, **kw)

    monkeypatch.setattr(Path, "open", counting_open)
    many = await scan_many(batch, now=utcnow(), quiet_period=QUIET, data_dir=tmp_path)
    assert opened == dict.fromkeys(files, 1)
    data_folder = [n for n, r in enumerate(many) if ("data folder", 1, Kind.RESIDUE) in found(r)]
    assert data_folder == list(range(0, 40, 4))
    logged = [n for n, r in enumerate(many) if ("mongod log", 1, Kind.RESIDUE) in found(r)]
    assert logged == [7, 9]


# --- round trips ------------------------------------------------------------------------------


async def forty_purged_accounts(database: Database, spool: Spool, data_dir: Path) -> list[Any]:
    """Forty accounts with residue of every kind each (every other one on hold)."""
    batch = []
    for n in range(40):
        name = f"acct-{n:02d}"
        identifiers = await account(name, f"Person {n}")
        message = await chat("left behind", account_id=name, conversation=f"c-{n}")
        await email(sender=f"{name}@example.com", body=f"unlinked {n}",
                    attachments=[("a.pdf", "application/pdf", f"%PDF-{n}".encode())])  # fmt: skip
        captured(identifiers, message)
        identifiers.blobs.add((await put_blob(f"pending {n}".encode())).sha256)
        if n % 2:
            await hold(database, account_id=name)
        await deliver(spool, mail_from=f"{name}@example.com", body="hello")
        await Export(account_id=name, created_by="test", expires_at=utcnow() + QUIET).insert()
        await audit.record(actor="agent-key", role=Role.AGENT, action="search",
                           query={"q": f"{name}@example.com"}, target={"account_id": name},
                           max_age=timedelta(days=30))  # fmt: skip
        write(data_dir / "journal" / f"{n}.journal", f"{name}@example.com")
        batch.append(identifiers)
    await Message.get_pymongo_collection().update_many(
        {"account_id": {"$ne": None}}, {"$set": {"purge_due_at": utcnow()}}
    )
    return batch


async def test_a_batch_of_40_accounts_costs_no_more_round_trips_than_one_of_2(
    mongo: EmbeddedMongo, database: Database, spool: Spool, tmp_path: Path
) -> None:
    batch = await forty_purged_accounts(database, spool, tmp_path)
    kw: dict[str, Any] = {"now": utcnow() + timedelta(seconds=2), "quiet_period": QUIET,
                          "data_dir": tmp_path}  # fmt: skip
    sent = {}
    for size in (2, 40):
        async with counting(mongo, database) as commands:
            many = await scan_many(batch[:size], **kw)
        sent[size] = Counter(commands.sent)
        assert all(("spool", 1, Kind.RESIDUE) in found(r) for r in many), "the residue is there"
    two, forty = sum(sent[2].values()), sum(sent[40].values())
    report(f"residue scan_many round trips: {two} for 2 accounts, {forty} for 40 "
           f"({dict(sent[40])})")  # fmt: skip
    assert forty <= two + 2, (sent[2], sent[40])


# --- the search index -------------------------------------------------------------------------


async def test_the_search_index_is_looked_at_once_and_each_account_gets_its_own_messages(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(residue, "INDEX_CATCH_UP_SECONDS", 0.5)
    index = SearchIndex(directory=tmp_path / "search", database=database.db.name)
    async with following(index):
        gone = await chat("purged", account_id="ann", conversation="a")
        missed = await chat("missed", account_id="bob", conversation="b")
        # Both in one segment: a segment whose every document is deleted simply goes.
        await index.request("rebuild")
        await Message.get_pymongo_collection().delete_one({"_id": gone.id})
        await index.sync()
        batch = [captured(Identifiers(account_id="ann"), gone),
                 captured(Identifiers(account_id="bob"), missed)]  # fmt: skip
        opened: list[int] = []
        real = residue.presence_of_each

        def counting(path: Path, ids: Any) -> Any:
            opened.append(len(ids))
            return real(path, ids)

        monkeypatch.setattr(residue, "presence_of_each", counting)
        kw: dict[str, Any] = {"now": utcnow(), "quiet_period": QUIET, "data_dir": tmp_path}
        many = await scan_many(batch, **kw)
        looks = list(opened)
        alone = await singly(batch, **kw)
    assert ("search index files", 1, Kind.PENDING) in found(many[0])
    assert not any(f.place == "search index" for f in many[0].findings)
    # Still stored: the messages probe names it (search finding a stored message is no
    # residue of its own: a held one is searched as it should be).
    assert ("messages", 1, Kind.RESIDUE) in found(many[1])
    assert not any(f.place.startswith("search index") for f in many[1].findings)
    assert many == alone
    # One look for the batch (of the ids no longer stored), not one per account.
    assert looks == [1]

"""The residue scan and the deletion certificate: after a purge, nothing of the account is
found anywhere the service keeps data (MongoDB and every file under ARCHIVE_DATA_DIR), the
purge record says so, and what does remain is named with its reason."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from beanie import PydanticObjectId

from retention.holds import place_hold, release_hold
from retention.residue import Identifiers, Kind, Verdict, scan
from retention.rules import RetentionPolicy
from retention.sweep import sweep
from service.serve import retention_policy
from store import audit
from store.accounts import register_account, request_erasure
from store.blobs import put_blob
from store.database import Database, open_database
from store.documents import (
    Account,
    AuditEvent,
    Conversation,
    Disclosure,
    Hold,
    HoldKind,
    Message,
    PurgeRecord,
    Role,
    utcnow,
)
from store.embedded import EmbeddedMongo
from tests.conftest import Api
from tests.factories import chat, email

QUIET = timedelta(0)


def policy(data_dir: Path) -> RetentionPolicy:
    return RetentionPolicy(grace=timedelta(days=180), max_age=timedelta(days=1095),
                           secret_key=b"k" * 32, blob_quiet_period=QUIET,
                           data_dir=data_dir)  # fmt: skip


async def ann_with_content() -> None:
    await register_account(account_id="ann", emails=["ann@example.com"], name="Ann Customer")
    await email(account_id="ann", attachments=[("contract.pdf", "application/pdf", b"%PDF-")])
    await chat("hello", account_id="ann", conversation="ann-chat")


def ann() -> Identifiers:
    return Identifiers(account_id="ann", emails={"ann@example.com"}, names={"Ann Customer"})


async def test_after_a_purge_the_record_carries_a_clean_scan(
    database: Database, tmp_path: Path
) -> None:
    await ann_with_content()
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    await sweep(database, now=now, policy=policy(tmp_path))
    [record] = await PurgeRecord.find().to_list()
    assert record.residue is not None and record.residue["clean"] is True
    assert record.residue["residue"] == 0
    kinds = {f["kind"] for f in record.residue["findings"]}
    assert kinds <= {Kind.KEPT.value}, record.residue["findings"]


async def test_the_certificate_is_served_with_the_purge_records(
    api: Api, database: Database
) -> None:
    await ann_with_content()
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    await sweep(database, now=now, policy=retention_policy(api.settings))
    response = await api.get("/api/v1/purge-records?account_id=ann", Role.COMPLIANCE)
    [record] = (await response.json())["records"]
    # The service's quiet period keeps the just-referenced blobs for a later sweep: said so,
    # and the certificate says "pending", never "clean", while they are there (before: clean).
    assert record["pending_blobs"] == 2
    assert record["residue"]["verdict"] == "pending" and record["residue"]["clean"] is False
    [blobs] = [f for f in record["residue"]["findings"] if f["place"] == "blobs"]
    assert blobs["count"] == 2 and blobs["until"] > record["done_at"]
    # And the API's own search index, until it has applied and compacted the deletions.
    assert any(f["place"].startswith("search index of") and f["kind"] == "pending"
               for f in record["residue"]["findings"])  # fmt: skip
    assert {"place": "blobs", "count": 2, "kind": "pending"}.items() <= next(
        f for f in record["residue"]["findings"] if f["place"] == "blobs"
    ).items()


async def test_what_remains_is_named_with_its_reason(database: Database, tmp_path: Path) -> None:
    await ann_with_content()
    held = await Conversation.find_one({"external_id": "ann-chat"})
    assert held is not None and held.id is not None
    await place_hold(database, account_id=None, conversation_id=held.id,
                     kind=HoldKind.DISPUTE, reason="chargeback", case_ref=None,
                     expires_at=None, created_by="legal")  # fmt: skip
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    await sweep(database, now=now, policy=policy(tmp_path))
    # Residue planted where an incomplete purge would leave it:
    orphan = await put_blob(b"a raw mail nobody references")
    await audit.record(actor="agent-key", role=Role.AGENT, action="search",
                       query={"q": "ann@example.com"}, max_age=timedelta(days=30))  # fmt: skip
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / f"{'0' * 24}.zip").write_bytes(b"PK")
    (tmp_path / "journal").mkdir()
    (tmp_path / "journal" / "1.journal").write_bytes(b'{"email": "ann@example.com"}')

    found = ann()
    found.blobs.add(orphan.sha256)
    residue = await scan(found, now=utcnow(), quiet_period=QUIET, data_dir=tmp_path)
    by_place = {(f.place, f.kind) for f in residue.findings}
    assert ("messages", Kind.HELD) in by_place
    assert ("blobs", Kind.RESIDUE) in by_place
    # The account lives on in its held conversation: its trail is redacted at its purge.
    assert ("audit_events", Kind.HELD) in by_place
    assert ("exports folder", Kind.RESIDUE) in by_place
    assert ("data folder", Kind.RESIDUE) in by_place
    assert residue.verdict is Verdict.REMAINS


async def purged_ann(database: Database, tmp_path: Path) -> datetime:
    await ann_with_content()
    purged = utcnow()
    await request_erasure(account_id="ann", now=purged)
    await sweep(database, now=purged, policy=policy(tmp_path))
    return purged


async def audit_search(q: str, *, role: Role, at: datetime) -> None:
    """The event the API writes for a search (``api.app``'s audit of ``GET /search``)."""
    await audit.record(actor=f"{role.value}-key", role=role, action="search", query={"q": q},
                       max_age=timedelta(days=395), now=at)  # fmt: skip


async def test_free_text_from_before_the_purge_that_still_names_the_account_is_residue(
    database: Database, tmp_path: Path
) -> None:
    purged = await purged_ann(database, tmp_path)
    # What a redaction that missed an event leaves (written as of before the purge).
    await audit_search("from:ann@example.com", role=Role.AGENT, at=purged - timedelta(hours=1))
    residue = await scan(ann(), now=utcnow(), quiet_period=QUIET, data_dir=tmp_path,
                         captured_at=purged)  # fmt: skip
    assert residue.verdict is Verdict.REMAINS
    assert "residue  audit_events: 1 free text (search terms, filters) naming the account" in (
        residue.lines())  # fmt: skip


async def test_compliances_searches_that_verify_an_erasure_are_not_its_residue(
    database: Database, tmp_path: Path
) -> None:
    purged = await purged_ann(database, tmp_path)
    await audit_search("ann@example.com", role=Role.COMPLIANCE, at=utcnow())
    residue = await scan(ann(), now=utcnow(), quiet_period=QUIET, data_dir=tmp_path,
                         captured_at=purged)  # fmt: skip
    assert residue.verdict is Verdict.CLEAN, residue.lines()
    [kept] = [f for f in residue.findings if f.place == "audit_events" and "since" in f.why]
    assert kept.kind is Kind.KEPT and kept.count == 1


@pytest.mark.slow
async def test_a_held_accounts_own_searches_are_not_residue(env: dict[str, str]) -> None:
    """Before: a held account, never purged, that compliance had searched for with
    ``account:ann`` was "1 items remain that should not", exit 1: a false alarm."""
    async with open_database(env["ARCHIVE_MONGODB_URI"], name=env["ARCHIVE_DB_NAME"]) as db:
        await ann_with_content()
        await place_hold(db, account_id="ann", conversation_id=None, kind=HoldKind.DISPUTE,
                         reason="r", case_ref=None, expires_at=None,
                         created_by="legal")  # fmt: skip
        await audit_search("account:ann", role=Role.COMPLIANCE, at=utcnow())
        now = utcnow()
        await request_erasure(account_id="ann", now=now)
        await sweep(db, now=now, policy=policy(Path(env["ARCHIVE_DATA_DIR"])))
    code, out = await verify(env, "--account", "ann")
    assert code == 3, out
    assert ": kept: " in out
    assert "held     audit_events: 1 free text naming the account, which is not purged" in out
    assert "\n  residue " not in out


async def test_hold_reasons_and_disclosures_forget_the_customer_at_the_purge(
    database: Database, tmp_path: Path
) -> None:
    """Before: the reasons kept the name and address forever after release and purge, and
    the certificate said nothing of them."""
    await register_account(account_id="zelda", emails=["hugo.holdquux@example.net"],
                           name="Zelda Hugo Holdquux")  # fmt: skip
    await email(account_id="zelda")
    await chat("my parcel", account_id="zelda", conversation="zelda-chat")
    conversation = await Conversation.find_one({"external_id": "zelda-chat"})
    assert conversation is not None and conversation.id is not None
    on_account = await place_hold(database, account_id="zelda", conversation_id=None,
                                  kind=HoldKind.CRIMINAL_INVESTIGATION,
                                  reason="retention order re Zelda Quuxworth",
                                  case_ref="PR-7 zelda", expires_at=None,
                                  created_by="legal")  # fmt: skip
    on_chat = await place_hold(database, account_id=None, conversation_id=conversation.id,
                               kind=HoldKind.DISPUTE,
                               reason="chargeback by Hugo Holdquux (hugo.holdquux@example.net)",
                               case_ref=None, expires_at=None, created_by="legal")  # fmt: skip
    await Disclosure(export_id=PydanticObjectId(), hold_id=on_account.id, case_ref="PR-7 zelda",
                     authority="Court", legal_basis="order re Holdquux",
                     disclosed_by="legal").insert()  # fmt: skip
    for hold in (on_account, on_chat):
        assert hold.id is not None
        await release_hold(
            hold_id=hold.id, released_by="legal", reason="Zelda settled", now=utcnow()
        )
    await request_erasure(account_id="zelda", now=utcnow())
    await sweep(database, now=utcnow(), policy=policy(tmp_path))

    account_hold, chat_hold = await Hold.find_all().sort("created_at").to_list()
    assert account_hold.reason == "retention order re [redacted] Quuxworth"
    assert account_hold.case_ref == "PR-7 [redacted]"
    assert account_hold.release_reason == "[redacted] settled"
    assert chat_hold.reason == "chargeback by [redacted] [redacted] ([redacted])"
    [disclosure] = await Disclosure.find_all().to_list()
    assert (disclosure.case_ref, disclosure.legal_basis) == (
        "PR-7 [redacted]",
        "order re [redacted]",
    )
    zelda = Identifiers(account_id="zelda", emails={"hugo.holdquux@example.net"},
                        names={"Zelda Hugo Holdquux"})  # fmt: skip
    residue = await scan(zelda, now=utcnow(), quiet_period=QUIET, data_dir=tmp_path)
    assert not [f for f in residue.findings if f.place == "holds and disclosures"], residue.lines()


async def test_a_hold_reason_naming_a_purged_customer_is_residue(
    database: Database, tmp_path: Path
) -> None:
    await purged_ann(database, tmp_path)
    await Hold(account_id="someone-else", kind=HoldKind.DISPUTE, reason="refund to Ann Customer",
               created_by="legal").insert()  # fmt: skip
    residue = await scan(ann(), now=utcnow(), quiet_period=QUIET, data_dir=tmp_path)
    assert "residue  holds and disclosures: 1 reasons or references naming the account" in (
        residue.lines())  # fmt: skip


async def test_mail_and_chat_from_a_purged_customers_address_go_with_the_next_sweep(
    database: Database, tmp_path: Path
) -> None:
    """Before: mail and a chat from her address after the purge stayed unlinked, 'past their
    deadline' to verify-purge, and no sweep ever removed them. The tombstone keeps keyed
    hashes of its addresses (never the addresses), and late content links to it."""
    await purged_ann(database, tmp_path)
    [tombstone] = await Account.find_all().to_list()
    assert tombstone.emails == [] and len(tombstone.purged_addresses) == 1
    assert "ann@example.com" not in tombstone.purged_addresses[0]
    late_mail = await email(subject="one more thing")  # from Ann Customer <ann@example.com>
    late_chat = await chat("hello again", conversation="ann-later",
                           customer_email="ANN@example.com")  # fmt: skip
    for late in (late_mail, late_chat):
        assert late.account_id == "ann" and late.restricted  # hidden from agents at once
        assert late.purge_due_at is not None and late.purge_due_at <= utcnow()
    await sweep(database, now=utcnow(), policy=policy(tmp_path))
    assert await Message.find({"_id": {"$in": [late_mail.id, late_chat.id]}}).count() == 0
    residue = await scan(ann(), now=utcnow(), quiet_period=QUIET, data_dir=tmp_path)
    assert residue.verdict is Verdict.CLEAN, residue.lines()


async def test_audit_free_text_is_forgotten_after_its_own_max_age(database: Database) -> None:
    now = utcnow()
    await audit_search("Quuxstreet 12 Zelda", role=Role.COMPLIANCE, at=now - timedelta(days=31))
    await audit_search("quuxworth OR zanzibarquux", role=Role.AGENT, at=now - timedelta(days=29))
    assert await audit.forget_free_text(before=now - timedelta(days=30)) == 1
    old, recent = await AuditEvent.find_all().sort("at").to_list()
    assert old.query == {"q": audit.REDACTED} and old.mentions == []
    assert (old.actor, old.action) == ("compliance-key", "search")  # who and what stay
    assert recent.query == {"q": "quuxworth OR zanzibarquux"}
    assert await audit.forget_free_text(before=now - timedelta(days=30)) == 0  # once


async def test_the_scan_reads_the_embedded_mongods_log_files(
    database: Database, tmp_path: Path
) -> None:
    """mongod's own log (and a rotated one) is searched for the addresses and names; its own
    words (an index on ``channel``) and ids are not the account's."""
    mongo = tmp_path / "mongo"
    mongo.mkdir()
    (mongo / "mongod.log").write_text('{"msg":"Index build: done","attr":{"index":"channel_1",'
                                      '"account_id":"ann"}}\n')  # fmt: skip
    found = await scan(ann(), now=utcnow(), quiet_period=QUIET, data_dir=tmp_path)
    assert found.verdict is Verdict.CLEAN
    (mongo / "mongod.log.2026-11-24T10-00-00").write_text(
        '{"msg":"Slow query","attr":{"command":{"filter":{"participants":"ANN@example.com"}}}}\n'
    )
    residue = await scan(ann(), now=utcnow(), quiet_period=QUIET, data_dir=tmp_path)
    assert [(f.place, f.count, f.kind) for f in residue.findings] == [
        ("mongod log", 1, Kind.RESIDUE)
    ]


async def test_the_purge_redacts_search_text_that_named_the_account(
    database: Database, tmp_path: Path
) -> None:
    await ann_with_content()
    await audit.record(actor="agent-key", role=Role.AGENT, action="search",
                       query={"q": "refund ann@example.com", "participant": "ann@example.com"},
                       max_age=timedelta(days=30))  # fmt: skip
    await audit.record(actor="agent-key", role=Role.AGENT, action="search",
                       query={"q": "refund policy"}, max_age=timedelta(days=30))  # fmt: skip
    now = utcnow()
    await request_erasure(account_id="ann", now=now)
    await sweep(database, now=now, policy=policy(tmp_path))
    queries = sorted([e.query async for e in AuditEvent.find()], key=str)
    assert {"q": "refund policy"} in queries
    assert not any("ann@example.com" in str(q) for q in queries)
    assert await Message.find({"account_id": "ann"}).count() == 0


# --- support-archive verify-purge ----------------------------------------------------------


@pytest.fixture
def env(mongo: EmbeddedMongo, tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVE_")}
    return base | {
        "ARCHIVE_MONGODB_URI": mongo.uri, "ARCHIVE_DB_NAME": f"t_{uuid.uuid4().hex[:12]}",
        "ARCHIVE_DATA_DIR": str(tmp_path),
        "ARCHIVE_SECRET_KEY": "verify-secret-0123456789abcdef0123456789",
    }  # fmt: skip


async def verify(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "verify-purge", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def purged_in(env: dict[str, str], *, hold: bool = False, quiet: timedelta = QUIET) -> None:
    async with open_database(env["ARCHIVE_MONGODB_URI"], name=env["ARCHIVE_DB_NAME"]) as db:
        await ann_with_content()
        if hold:
            conversation = await Conversation.find_one({"external_id": "ann-chat"})
            assert conversation is not None
            await place_hold(db, account_id=None, conversation_id=conversation.id,
                             kind=HoldKind.DISPUTE, reason="r", case_ref=None, expires_at=None,
                             created_by="legal")  # fmt: skip
        now = utcnow()
        await request_erasure(account_id="ann", now=now)
        secret = env["ARCHIVE_SECRET_KEY"].encode()
        await sweep(db, now=now, policy=RetentionPolicy(
            grace=timedelta(days=180), max_age=timedelta(days=1095), secret_key=secret,
            blob_quiet_period=quiet, data_dir=Path(env["ARCHIVE_DATA_DIR"])))  # fmt: skip


@pytest.mark.slow
async def test_verify_purge_prints_the_certificate_and_exits_0_when_nothing_remains(
    env: dict[str, str],
) -> None:
    await purged_in(env)
    code, out = await verify(env, "--account", "ann", "--email", "ann@example.com")
    assert code == 0, out
    assert "erasure purge due" in out
    assert ": clean: nothing of it remains and nothing is pending" in out


@pytest.mark.slow
async def test_verify_purge_exits_1_and_says_where_when_something_remains(
    env: dict[str, str], tmp_path: Path
) -> None:
    await purged_in(env)
    (tmp_path / "notes.txt").write_text("call ann@example.com back")
    code, out = await verify(env, "--account", "ann", "--email", "ann@example.com")
    assert code == 1, out
    assert "residue  data folder: 1 files naming the account" in out


@pytest.mark.slow
async def test_verify_purge_says_pending_and_exits_3_while_blobs_wait_out_their_quiet_period(
    env: dict[str, str],
) -> None:
    """Before: "clean: nothing of it remains", exit 0, while the raw mail and its attachment
    were still stored (the scan on demand did not know the blobs the purge left pending)."""
    await purged_in(env, quiet=timedelta(minutes=5))
    code, out = await verify(env, "--account", "ann", "--email", "ann@example.com")
    assert code == 3, out
    assert ": pending: 2 items on their way out; the last goes at the first sweep after" in out
    assert "pending  blobs: 2 referenced within the quiet period" in out
    assert "clean" not in out
    async with open_database(env["ARCHIVE_MONGODB_URI"], name=env["ARCHIVE_DB_NAME"]) as db:
        [record] = await PurgeRecord.find_all().to_list()
        assert record.residue is not None and record.residue["verdict"] == "pending"
        assert not record.residue["clean"]
        await sweep(db, now=utcnow(), policy=policy(Path(env["ARCHIVE_DATA_DIR"])))  # quiet over
        [record] = await PurgeRecord.find_all().to_list()
        assert record.residue is not None and record.residue["verdict"] == "clean"
    code, out = await verify(env, "--account", "ann", "--email", "ann@example.com")
    assert code == 0, out


@pytest.mark.slow
async def test_verify_purge_exits_3_when_only_held_content_remains(env: dict[str, str]) -> None:
    await purged_in(env, hold=True)
    code, out = await verify(env, "--account", "ann")
    assert code == 3, out
    assert "held     messages: 1 kept by an active hold" in out

"""Exports: a customer's data, and disclosures to authorities with a register."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import tracemalloc
import zipfile
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from exports.builder import (
    Scope,
    build_export,
    remove_expired_exports,
    start_export,
    write_export,
)
from ingest.filer import Filer, filing
from retention.records import verify_purge
from retention.sweep import sweep
from service.serve import retention_policy
from store.accounts import register_account
from store.blobs import read_blob
from store.database import Database
from store.documents import Conversation, Disclosure, Export, Message, Role, utcnow
from store.spool import Spool
from tests.conftest import Api
from tests.factories import chat, email
from tests.helpers import eventually
from tests.mail import SUPPORT, make_email

HOSTILE = ["../../etc/passwd", "/etc/shadow", "C:\\Windows\\win.ini", "Über\u202enaïve.pdf",
           "tab\tnew\nline\x00nul.txt", "..", "", "a" * 300 + ".pdf"]  # fmt: skip
BROKEN = (
    b"From: <<<@@>>>\r\nSubject: =?x-unknown?Q?broken?=\r\n"
    b"Content-Type: multipart/mixed\r\n\r\nno boundary\r\n"
)


@pytest.fixture
async def account(api: Api) -> dict[str, Any]:
    """An account with email (hostile attachment names), chat, and an email that did not
    parse; returns the raw bytes of its emails by message id."""
    await api.put("/api/v1/accounts/acct-x", Role.PLATFORM, json={"emails": ["ann@example.com"]})
    attachments = [(f"f{n}", "application/octet-stream", f"file {n}".encode()) for n in
                   range(len(HOSTILE))]  # fmt: skip
    mail = await email(account_id="acct-x", attachments=attachments)
    # The names a hostile sender can produce (RFC 2231 decodes to anything), stored as such.
    for attachment, name in zip(mail.attachments, HOSTILE, strict=True):
        attachment.filename = name
    await mail.save()
    await chat("chat message", account_id="acct-x", conversation="x-chat")
    from ingest.mime import parse_email
    from store.messages import file_email
    from tests.factories import SUPPORT

    broken = await file_email(
        parse_email(BROKEN, support=SUPPORT, received_at=utcnow()).for_account("acct-x")
    )
    raws = {}
    for message in await Message.find({"raw": {"$ne": None}}).to_list():
        assert message.raw is not None
        raws[str(message.id)] = await read_blob(message.raw.sha256)
    return {"raws": raws, "mail": mail, "broken": broken.message_id}


async def export_via_api(api: Api, body: dict[str, Any]) -> tuple[dict[str, Any], bytes, Any]:
    started = await api.post("/api/v1/exports", Role.COMPLIANCE, json=body)
    assert started.status == 202, await started.text()
    export_id = (await started.json())["id"]

    async def ready() -> bool:
        view = await (await api.get(f"/api/v1/exports/{export_id}", Role.COMPLIANCE)).json()
        assert view["status"] != "failed"
        return bool(view["status"] == "ready")

    await eventually(ready, timeout=30)
    view = await (await api.get(f"/api/v1/exports/{export_id}", Role.COMPLIANCE)).json()
    response = await api.get(f"/api/v1/exports/{export_id}/download", Role.COMPLIANCE)
    assert response.status == 200
    assert response.headers["X-Manifest-SHA256"] == view["manifest_sha256"]
    return view, await response.read(), response


def check_archive(data: bytes) -> tuple[zipfile.ZipFile, dict[str, Any]]:
    """Open the zip, check every manifest hash and that no name leaves the archive root."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    names = archive.namelist()
    for name in names:
        path = PurePosixPath(name)
        assert not path.is_absolute() and ".." not in path.parts, name
        assert all(ord(c) >= 32 for c in name), repr(name)
        assert "\\" not in name and len(path.name) <= 130, name
    manifest = json.loads(archive.read("manifest.json"))
    assert set(manifest["files"]) == set(names) - {"manifest.json"}
    for name, entry in manifest["files"].items():
        content = archive.read(name)
        assert (hashlib.sha256(content).hexdigest(), len(content)) == (
            entry["sha256"],
            entry["size"],
        )
    return archive, manifest


async def test_a_subject_access_export_holds_everything_of_the_account(
    api: Api, account: dict[str, Any]
) -> None:
    view, data, _ = await export_via_api(api, {"account_id": "acct-x"})
    assert view["manifest_sha256"] == hashlib.sha256(
        zipfile.ZipFile(io.BytesIO(data)).read("manifest.json")).hexdigest()  # fmt: skip
    archive, _ = check_archive(data)
    conversations = json.loads(archive.read("conversations.json"))["conversations"]
    messages = [m for c in conversations for m in c["messages"]]
    assert len(conversations) == 3 and len(messages) == 3
    assert {m["channel"] for m in messages} == {"email", "chat"}
    for message in messages:
        if message["eml"]:
            assert archive.read(message["eml"]) == account["raws"][message["id"]]
    broken = next(m for m in messages if m["id"] == str(account["broken"]))
    assert broken["parse_error"]
    mail = next(m for m in messages if m["id"] == str(account["mail"].id))
    files = [a["file"] for a in mail["attachments"]]
    assert len(files) == len(HOSTILE)
    for n, file in enumerate(files):
        assert archive.read(file) == f"file {n}".encode()
    assert "README.txt" in archive.namelist()


async def test_a_subject_access_export_holds_the_accounts_own_record(
    api: Api, account: dict[str, Any]
) -> None:
    await api.put("/api/v1/accounts/acct-x", Role.PLATFORM,
                  json={"emails": ["ann@example.com"], "name": "Ann Example"})  # fmt: skip
    _, data, _ = await export_via_api(api, {"account_id": "acct-x"})
    archive, manifest = check_archive(data)
    record = json.loads(archive.read("account.json"))
    assert (record["account_id"], record["emails"], record["name"], record["status"]) == (
        "acct-x",
        ["ann@example.com"],
        "Ann Example",
        "active",
    )
    assert record["created_at"] and record["deleted_at"] is None
    assert "account.json" in manifest["files"]
    assert "account.json" in archive.read("README.txt").decode()


async def test_a_disclosure_is_entered_once_in_the_register_without_content(
    api: Api, account: dict[str, Any]
) -> None:
    hold = await (await api.post("/api/v1/holds", Role.COMPLIANCE, json={
        "account_id": "acct-x", "kind": "criminal_investigation", "reason": "fraud",
        "case_ref": "PR-2026-7"})).json()  # fmt: skip
    body = {"hold_id": hold["id"], "authority": "Tribunal judiciaire de Paris",
            "legal_basis": "Réquisition art. 60-1 CPP"}  # fmt: skip
    view, data, _ = await export_via_api(api, body)
    check_archive(data)
    register = await (await api.get("/api/v1/disclosures", Role.COMPLIANCE)).json()
    [entry] = register["disclosures"]
    assert (entry["hold_id"], entry["case_ref"], entry["export_id"]) == (
        hold["id"],
        "PR-2026-7",
        view["id"],
    )
    assert entry["authority"] == "Tribunal judiciaire de Paris"
    assert entry["manifest_sha256"] == view["manifest_sha256"]
    stored = json.dumps(await Disclosure.get_pymongo_collection().find_one(), default=str)
    for content in ("ann@example.com", "chat message", "Where is my order"):
        assert content not in stored


async def test_exports_are_for_compliance_only_and_audited(
    api: Api, account: dict[str, Any]
) -> None:
    for role in (Role.AGENT, Role.PLATFORM):
        response = await api.post("/api/v1/exports", role, json={"account_id": "acct-x"})
        assert response.status == 403
        assert (await api.get("/api/v1/disclosures", role)).status == 403
    view, _, _ = await export_via_api(api, {"account_id": "acct-x"})
    from store.documents import AuditEvent

    actions = [e.action async for e in AuditEvent.find({"target.export_id": view["id"]})]
    assert sorted(actions) == ["export.create", "export.download"]


async def test_a_disclosure_needs_its_authority_and_legal_basis(
    api: Api, account: dict[str, Any]
) -> None:
    hold = await (await api.post("/api/v1/holds", Role.COMPLIANCE, json={
        "account_id": "acct-x", "kind": "dispute", "reason": "r"})).json()  # fmt: skip
    response = await api.post("/api/v1/exports", Role.COMPLIANCE, json={"hold_id": hold["id"]})
    assert response.status == 422
    assert await Export.count() == 0


async def test_expired_exports_are_removed_with_their_files(
    api: Api, account: dict[str, Any], database: Database
) -> None:
    view, _, _ = await export_via_api(api, {"account_id": "acct-x"})
    export = await Export.get(view["id"])
    assert export is not None and export.path and Path(export.path).exists()
    assert await remove_expired_exports(now=export.expires_at) == 1
    assert not Path(export.path).exists()
    assert (await api.get(f"/api/v1/exports/{view['id']}", Role.COMPLIANCE)).status == 404


@pytest.mark.slow
async def test_a_200_mb_export_is_streamed_without_holding_it_in_memory(
    database: Database, tmp_path: Path
) -> None:
    from store.blobs import NewAttachment, put_attachment

    message = await email(account_id="big")  # one message, then 40 distinct 5 MB attachments
    parts = [NewAttachment(os.urandom(5 << 20), f"part-{n}.bin", "application/octet-stream")
             for n in range(40)]  # fmt: skip
    message.attachments = [await put_attachment(part) for part in parts]
    await message.save()

    tracemalloc.start()
    try:
        written = await write_export(tmp_path / "big.zip", Scope(account_id="big"), now=utcnow())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written.size > 200 * 1024 * 1024
    assert peak < 50 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB"
    with zipfile.ZipFile(tmp_path / "big.zip") as archive:
        assert archive.testzip() is None


async def test_an_accounts_exports_are_purged_with_it(
    api: Api, account: dict[str, Any], database: Database
) -> None:
    view, _, _ = await export_via_api(api, {"account_id": "acct-x"})
    export = await Export.get(view["id"])
    assert export is not None and export.path
    await api.post("/api/v1/accounts/acct-x/erasure", Role.COMPLIANCE)
    await sweep(database, now=utcnow(), policy=retention_policy(api.settings))
    assert await Export.get(view["id"]) is None
    assert not Path(export.path).exists()


async def test_a_disclosure_of_a_released_holds_conversation_goes_with_its_purge(
    api: Api, account: dict[str, Any], database: Database
) -> None:
    """Before: the conversation was purged 3 s after the release and the certificate said
    clean, while the disclosure zip (chat text, name, address) stayed downloadable and on disk
    for the export's 7 days: exports were purged by ``account_id``, which a hold's has not.
    The register's entry stays, without content."""
    await api.post("/api/v1/accounts/acct-x/erasure", Role.COMPLIANCE)
    conversation = await Conversation.find_one({"external_id": "x-chat"})
    assert conversation is not None
    hold = await (await api.post("/api/v1/holds", Role.COMPLIANCE, json={
        "conversation_id": str(conversation.id), "kind": "dispute", "reason": "chargeback"}
    )).json()  # fmt: skip
    policy = retention_policy(api.settings)
    await sweep(database, now=utcnow(), policy=policy)  # all but the held chat goes
    view, _, _ = await export_via_api(api, {"hold_id": hold["id"], "authority": "Court",
                                            "legal_basis": "order"})  # fmt: skip
    export = await Export.get(view["id"])
    assert export is not None and export.path and Path(export.path).exists()
    assert export.conversation_ids == [conversation.id]
    assert export.account_ids == ["acct-x"]
    released = await api.post(f"/api/v1/holds/{hold['id']}/release", Role.COMPLIANCE,
                              json={"reason": "settled"})  # fmt: skip
    assert released.status == 200, await released.text()

    await sweep(database, now=utcnow(), policy=policy)

    assert await Export.get(view["id"]) is None and not Path(export.path).exists()
    download = await api.get(f"/api/v1/exports/{view['id']}/download", Role.COMPLIANCE)
    assert download.status == 404
    [entry] = (await (await api.get("/api/v1/disclosures", Role.COMPLIANCE)).json())["disclosures"]
    assert entry["export_id"] == view["id"]  # the register keeps that it happened
    found = await verify_purge(account_id="acct-x", emails=["ann@example.com"], names=[],
                               now=utcnow(), policy=policy)  # fmt: skip
    assert not [f for f in found.findings if f.place == "exports"], found.lines()


async def test_exports_are_listed_newest_first_by_account_in_cursor_pages(api: Api) -> None:
    made = []
    for account_id in ("acct-a", "acct-b", "acct-a"):
        await email(account_id=account_id)
        started = await api.post(
            "/api/v1/exports", Role.COMPLIANCE, json={"account_id": account_id}
        )
        made.append(((await started.json())["id"], account_id))
    first = await (await api.get("/api/v1/exports?limit=2", Role.COMPLIANCE)).json()
    rest = await (await api.get(f"/api/v1/exports?limit=2&cursor={first['next_cursor']}",
                                Role.COMPLIANCE)).json()  # fmt: skip
    assert [e["id"] for e in first["exports"] + rest["exports"]] == [i for i, _ in reversed(made)]
    assert rest["next_cursor"] is None
    of_a = await (await api.get("/api/v1/exports?account_id=acct-a", Role.COMPLIANCE)).json()
    assert [e["id"] for e in of_a["exports"]] == [i for i, a in reversed(made) if a == "acct-a"]


async def test_an_export_holds_what_was_acknowledged_before_it_was_asked_for(
    tmp_path: Path, database: Database
) -> None:
    """Five mails are acknowledged (in the spool) but not filed yet when the export is asked
    for: it waits for the filer, and holds all five."""
    await register_account(account_id="acct-q", emails=["quinn@example.com"], name=None)
    spool = Spool()
    for n in range(5):
        await spool.put_email(make_email(sender="quinn@example.com", message_id=f"<q{n}@x>"),
                              envelope=None, received_at=utcnow())  # fmt: skip
    export = await start_export(scope=Scope(account_id="acct-q"), account_id="acct-q",
                                hold_id=None, created_by="test", now=utcnow(),
                                max_age=timedelta(days=1), directory=tmp_path)  # fmt: skip
    building = asyncio.create_task(
        build_export(export, Scope(account_id="acct-q"), directory=tmp_path, now=utcnow())
    )
    await asyncio.sleep(1)  # the export is waiting: nothing is filed yet
    assert not building.done() and await Message.count() == 0
    async with filing(Filer(spool, support=SUPPORT), spool, shutdown_grace=10):
        ready = await asyncio.wait_for(building, 60)
    assert ready.path is not None
    with zipfile.ZipFile(ready.path) as archive:
        conversations = json.loads(archive.read("conversations.json"))["conversations"]
        manifest = json.loads(archive.read("manifest.json"))
    assert sum(len(c["messages"]) for c in conversations) == 5
    assert "deliveries_not_yet_filed" not in manifest

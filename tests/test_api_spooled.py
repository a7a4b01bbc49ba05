"""An acknowledged id never answers 404: while its message waits in the spool (the filer is
not running here), the API reads it from there."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ingest.filer import Filer
from ingest.smtp import smtp_server
from store.documents import AuditEvent, Role, SpoolEntry, iso
from store.spool import Spool
from tests.conftest import Api
from tests.mail import SUPPORT, handler, make_email, queued_id, send

RAW = make_email(message_id="<waiting@example.com>")


@pytest.fixture
async def smtp_without_filer(spool: Spool) -> AsyncIterator[int]:
    """An SMTP server that spools and acknowledges; nothing files what it accepts."""
    async with smtp_server(handler(spool), host="127.0.0.1", port=0,
                           max_message_bytes=10_000_000) as server:  # fmt: skip
        yield server.sockets[0].getsockname()[1]


async def spooled(port: int, raw: bytes = RAW) -> str:
    code, reply = await send(port, raw)
    assert code == 250
    return queued_id(reply)


async def test_the_original_of_a_message_in_the_spool_is_served_byte_identical(
    api: Api, smtp_without_filer: int
) -> None:
    ident = await spooled(smtp_without_filer)
    response = await api.get(f"/api/v1/messages/{ident}/raw", Role.COMPLIANCE)
    assert response.status == 200
    assert response.content_type == "message/rfc822"
    assert await response.read() == RAW
    assert await SpoolEntry.count() == 1  # really still in the spool


async def test_a_large_original_in_the_spool_is_served_from_its_blob(
    api: Api, smtp_without_filer: int
) -> None:
    raw = make_email(body="A long log line.\n" * 400_000)  # over 4 MiB: not inline
    ident = await spooled(smtp_without_filer, raw)
    entry = await SpoolEntry.find_one({})
    assert entry is not None and entry.raw is None and entry.raw_sha256 is not None
    response = await api.get(f"/api/v1/messages/{ident}/raw", Role.ADMIN)
    assert await response.read() == raw


async def test_a_message_in_the_spool_is_shown_as_being_filed(
    api: Api, smtp_without_filer: int
) -> None:
    ident = await spooled(smtp_without_filer)
    entry = await SpoolEntry.find_one({})
    assert entry is not None
    response = await api.get(f"/api/v1/messages/{ident}", Role.AGENT)
    assert response.status == 200
    assert await response.json() == {
        "id": ident,
        "status": "filing",
        "size": len(RAW),
        "archived_at": iso(entry.received_at),
        "raw_url": f"/api/v1/messages/{ident}/raw",
    }


async def test_an_agent_asking_for_the_original_of_a_message_being_filed_is_told_to_retry(
    api: Api, smtp_without_filer: int
) -> None:
    # Whose mail it is, and so whether an agent may read it, is known once it is filed.
    ident = await spooled(smtp_without_filer)
    response = await api.get(f"/api/v1/messages/{ident}/raw", Role.AGENT)
    assert response.status == 503
    assert response.content_type == "application/problem+json"
    assert response.headers["Retry-After"] == "5"
    assert "being filed" in (await response.json())["detail"]


async def test_reading_a_message_in_the_spool_is_an_audit_event(
    api: Api, smtp_without_filer: int
) -> None:
    ident = await spooled(smtp_without_filer)
    await api.get(f"/api/v1/messages/{ident}", Role.AGENT)
    await api.get(f"/api/v1/messages/{ident}/raw", Role.COMPLIANCE)
    events = await AuditEvent.find({"target.message_id": ident}).sort("+at").to_list()
    assert [(e.action, e.actor) for e in events] == [
        ("message.read", "agent-key"), ("message.raw", "compliance-key"),
    ]  # fmt: skip


async def test_once_filed_the_same_id_answers_with_the_message(
    api: Api, spool: Spool, smtp_without_filer: int
) -> None:
    ident = await spooled(smtp_without_filer)
    entry = await SpoolEntry.find_one({})
    assert entry is not None
    await Filer(spool, support=SUPPORT).file_once()
    body = await (await api.get(f"/api/v1/messages/{ident}", Role.AGENT)).json()
    assert (body["id"], body["status"], body["subject"]) == (ident, "filed", "Where is my order?")
    assert body["archived_at"] == iso(entry.received_at)


async def test_an_attachment_of_a_message_being_filed_is_asked_for_again_later(
    api: Api, smtp_without_filer: int
) -> None:
    ident = await spooled(smtp_without_filer)
    response = await api.get(f"/api/v1/messages/{ident}/attachments/0", Role.ADMIN)
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"

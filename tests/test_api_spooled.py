"""An acknowledged id never answers 404: while its message waits in the spool (the filer is
not running here), the API reads it from there."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from beanie import PydanticObjectId

from ingest.filer import Filer
from ingest.smtp import smtp_server
from service.serve import Ingest, build_app, make_ingest
from service.settings import load_settings
from store.chat import chat_dedup_key
from store.chat_spool import claimed_ids, conversation_key, known_ids
from store.database import Database
from store.documents import AuditEvent, Message, Role, SpoolEntry, iso
from store.keys import create_key
from store.spool import Spool
from tests.conftest import WIDGET_SECRET, Api
from tests.helpers import operations, whole_reads
from tests.mail import SUPPORT, handler, make_email, queued_id, send
from tests.test_chat import post, transcript

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
        "channel": "email",
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


# --- chat: the ids a webhook's 201 named, while its call waits in the spool ----------------


@pytest.fixture
async def chat_api_without_filer(database: Database, tmp_path: Path) -> AsyncIterator[ChatApi]:
    """The app as serve builds it, its webhooks spooling into an ingest whose filer does not
    run (until the test runs it)."""
    settings = load_settings(
        data_dir=tmp_path, webhook_sources=[f"widget:generic:{WIDGET_SECRET}"],
        secret_key="test-secret-key-0123456789abcdef0123456789",
    )  # fmt: skip
    tokens = {role: (await create_key(name=f"{role}-key", role=role))[1] for role in Role}
    ingest = make_ingest(settings)
    async with TestClient(TestServer(build_app(settings, database, ingest=ingest))) as client:
        yield ChatApi(Api(client, tokens, settings), ingest)


@dataclass
class ChatApi:
    api: Api
    ingest: Ingest


async def acknowledged_chat(chat: ChatApi) -> dict[str, Any]:
    response = await post(chat.api.http, transcript(2, subject="Refund"), filed=False)
    assert response.status == 201
    answer: dict[str, Any] = await response.json()
    assert await SpoolEntry.count() == 1 and await Message.count() == 0  # still in the spool
    return answer


@pytest.mark.parametrize("role", [Role.AGENT, Role.COMPLIANCE])
async def test_a_chat_message_in_the_spool_is_shown_as_being_filed(
    chat_api_without_filer: ChatApi, role: Role
) -> None:
    answer = await acknowledged_chat(chat_api_without_filer)
    entry = await SpoolEntry.find_one({})
    assert entry is not None
    for named in answer["messages"]:
        response = await chat_api_without_filer.api.get(f"/api/v1/messages/{named['id']}", role)
        assert response.status == 200
        assert await response.json() == {
            "id": named["id"],
            "status": "filing",
            "channel": "chat",
            "size": entry.size,
            "archived_at": iso(entry.received_at),
            "raw_url": None,
        }


@pytest.mark.parametrize("role", [Role.AGENT, Role.COMPLIANCE])
async def test_a_chat_conversation_in_the_spool_is_shown_as_being_filed(
    chat_api_without_filer: ChatApi, role: Role
) -> None:
    answer = await acknowledged_chat(chat_api_without_filer)
    ident = answer["conversation_id"]
    response = await chat_api_without_filer.api.get(f"/api/v1/conversations/{ident}", role)
    assert response.status == 200
    body = await response.json()
    assert (body["id"], body["status"], body["channel"]) == (ident, "filing", "chat")
    assert [m["id"] for m in body["messages"]] == [m["id"] for m in answer["messages"]]
    assert {m["status"] for m in body["messages"]} == {"filing"}


@pytest.mark.parametrize("role", [Role.AGENT, Role.COMPLIANCE])
async def test_the_original_of_a_chat_message_in_the_spool_answers_as_once_filed(
    chat_api_without_filer: ChatApi, role: Role
) -> None:
    # A chat message has no .eml: the id resolves, and says so (not "no message").
    answer = await acknowledged_chat(chat_api_without_filer)
    ident = answer["messages"][0]["id"]
    response = await chat_api_without_filer.api.get(f"/api/v1/messages/{ident}/raw", role)
    assert response.status == 404
    assert "chat messages have none" in (await response.json())["detail"]


async def test_once_filed_the_ids_a_chat_answer_named_answer_with_what_was_filed(
    chat_api_without_filer: ChatApi,
) -> None:
    answer = await acknowledged_chat(chat_api_without_filer)
    await chat_api_without_filer.ingest.filer.file_once()
    api = chat_api_without_filer.api
    conversation = await (await api.get(f"/api/v1/conversations/{answer['conversation_id']}",
                                        Role.AGENT)).json()  # fmt: skip
    assert conversation["status"] == "filed"
    assert [m["id"] for m in conversation["messages"]] == [m["id"] for m in answer["messages"]]
    message = await (await api.get(f"/api/v1/messages/{answer['messages'][0]['id']}")).json()
    assert (message["status"], message["channel"]) == ("filed", "chat")


async def test_reading_a_chat_conversation_in_the_spool_is_an_audit_event(
    chat_api_without_filer: ChatApi,
) -> None:
    answer = await acknowledged_chat(chat_api_without_filer)
    ident = answer["conversation_id"]
    await chat_api_without_filer.api.get(f"/api/v1/conversations/{ident}", Role.AGENT)
    events = await AuditEvent.find({"target.conversation_id": ident}).to_list()
    assert [(e.action, e.actor) for e in events] == [("conversation.read", "agent-key")]


async def test_the_id_of_a_chat_call_entry_itself_names_no_message(
    chat_api_without_filer: ChatApi,
) -> None:
    # The spool entry's own id was never in an answer: it is not a message id.
    await acknowledged_chat(chat_api_without_filer)
    entry = await SpoolEntry.find_one({})
    assert entry is not None
    response = await chat_api_without_filer.api.get(f"/api/v1/messages/{entry.id}")
    assert response.status == 404


async def test_looking_up_an_id_a_chat_answer_named_uses_an_index(database: Database) -> None:
    # Every read of an id not filed asks the spool: a scan of a large backlog would be costly.
    ident = PydanticObjectId()
    plan = (
        await SpoolEntry.get_pymongo_collection()
        .find({"chat_claims.id": {"$eq": ident, "$type": "objectId"}})
        .explain()
    )
    assert "IXSCAN" in json.dumps(plan["queryPlanner"]["winningPlan"], default=str)


async def test_the_ids_a_chat_answer_names_are_looked_up_in_the_spool_by_index(
    database: Database,
) -> None:
    # Every webhook call and every filed chat batch asks the spool which of its keys are
    # claimed: a scan would cost each of them the whole backlog (after an outage, thousands).
    keys = [conversation_key("widget", "c-1"), chat_dedup_key("widget", "m-1")]
    async with operations(database) as ops:
        await known_ids(keys=keys)
        await claimed_ids(keys=keys, besides=[PydanticObjectId()])
    assert whole_reads(ops, "spool") == []

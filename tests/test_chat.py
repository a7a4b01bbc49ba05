"""Chat over signed webhooks: real HTTP requests to the app, a real mongod behind it."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ingest.chat.signature import sign
from service.serve import INGEST, build_app
from service.settings import load_settings
from store.accounts import register_account
from store.database import Database
from store.documents import Account, AuthorRole, Channel, Conversation, Direction, Message
from tests.chatwoot import message_webhook_data, rails_json, signed_headers
from tests.helpers import found

Client = TestClient[web.Request, web.Application]
WIDGET_SECRET = "widget-secret-0123456789"
CHATWOOT_SECRET = "chatwoot-secret-0123456789"
MAX_BODY = 256 * 1024
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


@pytest.fixture
async def http(database: Database, tmp_path: Path) -> AsyncIterator[Client]:
    settings = load_settings(
        webhook_sources=[f"widget:generic:{WIDGET_SECRET}", f"helpdesk:chatwoot:{CHATWOOT_SECRET}"],
        webhook_max_body_bytes=MAX_BODY,
        data_dir=tmp_path,
    )
    async with TestClient(TestServer(build_app(settings, database))) as client:
        yield client


def transcript(
    n: int = 1, *, conversation: str = "c-1", first: int = 0, **conv: Any
) -> dict[str, Any]:
    return {
        "conversation": {"id": conversation, **conv},
        "messages": [
            {
                "id": f"m-{i}",
                "author": {"role": "customer" if i % 2 == 0 else "agent", "name": f"P{i % 2}"},
                "text": f"message number {i} about the refund",
                "sent_at": (T0 + timedelta(seconds=i)).isoformat(),
            }
            for i in range(first, first + n)
        ],
    }


async def post(
    http: Client,
    payload: Any,
    *,
    source: str = "widget",
    secret: str = WIDGET_SECRET,
    timestamp: int | None = None,
    body: bytes | None = None,
    signed_body: bytes | None = None,
    prefix: str = "X-Archive",
    filed: bool = True,
) -> Any:
    """Post a signed call; with ``filed``, return once what it acknowledged is filed (the
    answer comes once the call is spooled, and the filer files it right behind)."""
    raw = body if body is not None else json.dumps(payload).encode()
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    headers = {
        f"{prefix}-Timestamp": stamp,
        f"{prefix}-Signature": sign(secret.encode(), stamp, signed_body or raw),
        "Content-Type": "application/json",
    }
    response = await http.post(f"/webhooks/chat/{source}", data=raw, headers=headers)
    if filed and response.status < 300:
        assert await http.app[INGEST].spool.empty(within=30), "not filed in time"
    return response


def chatwoot_event(
    event: str = "message_created",
    *,
    message_id: int = 501,
    content: str = "Hello, is my order shipped?",
) -> dict[str, Any]:
    """A Chatwoot message event, as Chatwoot's own code builds it (tests/chatwoot.py)."""
    return message_webhook_data(event, id=message_id, content=content)


async def post_chatwoot(http: Client, payload: Any, *, filed: bool = True) -> Any:
    """``post`` as Chatwoot posts: to the chatwoot source, the bytes Rails writes, signed and
    headed as Chatwoot's WebhookJob does (tests/chatwoot.py)."""
    body = rails_json(payload)
    response = await http.post("/webhooks/chat/helpdesk", data=body,
                               headers=signed_headers(CHATWOOT_SECRET, body))  # fmt: skip
    if filed and response.status < 300:
        assert await http.app[INGEST].spool.empty(within=30), "not filed in time"
    return response


async def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status
    assert response.content_type == "application/problem+json"
    problem: dict[str, Any] = await response.json()
    assert problem["status"] == status
    return problem


# --- the generic format ---------------------------------------------------------------------


async def test_a_single_message_is_stored_and_named_in_the_answer(http: Client) -> None:
    response = await post(http, transcript(1, subject="Refund"))
    assert response.status == 201
    answer = await response.json()
    [entry] = answer["messages"]
    assert (entry["external_id"], entry["duplicate"]) == ("m-0", False)

    message = await Message.get(entry["id"])
    assert message is not None
    assert str(message.conversation_id) == answer["conversation_id"]
    assert message.channel is Channel.CHAT
    assert message.direction is Direction.INBOUND
    assert message.author.role is AuthorRole.CUSTOMER
    assert message.text == "message number 0 about the refund"
    assert message.sent_at == T0
    assert message.source == "widget"


async def test_a_100_message_transcript_is_stored_in_order(http: Client) -> None:
    response = await post(http, transcript(100))
    assert response.status == 201
    assert len((await response.json())["messages"]) == 100
    conversation = await Conversation.find_one()
    assert conversation is not None and conversation.message_count == 100
    messages = (
        await Message.find(Message.conversation_id == conversation.id).sort("+sent_at").to_list()
    )
    assert [m.external_id for m in messages] == [f"m-{i}" for i in range(100)]
    assert {m.direction for m in messages} == {Direction.INBOUND, Direction.OUTBOUND}


async def test_a_resent_transcript_is_acknowledged_and_stores_nothing_twice(http: Client) -> None:
    first = await (await post(http, transcript(100))).json()
    again = await post(http, transcript(100))
    assert again.status == 200
    answer = await again.json()
    assert all(m["duplicate"] for m in answer["messages"])
    assert [m["id"] for m in answer["messages"]] == [m["id"] for m in first["messages"]]
    assert await Message.count() == 100
    assert (await Conversation.find_one()).message_count == 100  # type: ignore[union-attr]


async def test_concurrent_calls_are_filed_together_each_message_once(http: Client) -> None:
    # Calls that arrive together are filed by one group of writes; the same message in two
    # concurrent calls is new in exactly one answer, and each call gets its own answer.
    payloads = [transcript(3, conversation=f"c-{n}", first=3 * n) for n in range(30)]
    payloads += [transcript(3, conversation="c-0")]  # a repeat of the first, at the same time
    responses = await asyncio.gather(*(post(http, p) for p in payloads))
    answers = [await r.json() for r in responses]
    assert sorted(r.status for r in responses) == [200] + [201] * 30
    assert len({a["conversation_id"] for a in answers}) == 30
    new = [m["id"] for a in answers for m in a["messages"] if not m["duplicate"]]
    assert len(new) == len(set(new)) == await Message.count() == 90
    conversations = await Conversation.find_all().to_list()
    assert {c.message_count for c in conversations} == {3}


async def test_filing_reads_conversations_and_messages_through_indexes(
    http: Client, database: Database
) -> None:
    # The (source, external_id) index is partial: a bare equality does not let the planner
    # use it, and every call scanned the whole conversations collection.
    for n in range(20):
        await post(http, transcript(1, conversation=f"warm-{n}", first=100 + n))
    await database.db.command({"profile": 2})
    try:
        await post(http, transcript(3, conversation="c-new"))
        await post(http, transcript(3, conversation="c-new"))
    finally:
        await database.db.command({"profile": 0})
    plans = [
        (op["ns"].split(".", 1)[1], op.get("planSummary", ""))
        async for op in database.db["system.profile"].find(
            {"ns": {"$in": [f"{database.db.name}.conversations", f"{database.db.name}.messages"]}}
        )
    ]
    assert plans, "nothing was profiled"
    assert [p for p in plans if "COLLSCAN" in p[1]] == []


async def test_a_grown_transcript_stores_only_the_new_messages(http: Client) -> None:
    await post(http, transcript(3))
    response = await post(http, transcript(5))
    assert response.status == 201
    flags = [m["duplicate"] for m in (await response.json())["messages"]]
    assert flags == [True, True, True, False, False]
    assert await Message.count() == 5


async def test_a_message_repeated_within_one_call_is_stored_once(http: Client) -> None:
    payload = transcript(2)
    payload["messages"].append(payload["messages"][0])
    answer = await (await post(http, payload)).json()
    assert [m["duplicate"] for m in answer["messages"]] == [False, False, True]
    assert await Message.count() == 2


async def test_attachments_are_stored_as_blobs(http: Client) -> None:
    payload = transcript(1)
    payload["messages"][0]["attachments"] = [
        {"filename": "photo.png", "content_type": "image/png", "data_base64": "iVBORw0KGgo="}
    ]
    answer = await (await post(http, payload)).json()
    message = await Message.get(answer["messages"][0]["id"])
    assert message is not None and message.has_attachments
    assert (message.attachments[0].filename, message.attachments[0].size) == ("photo.png", 8)


async def test_the_text_of_a_chat_attachment_is_searchable(http: Client) -> None:
    payload = transcript(1)
    payload["messages"][0]["attachments"] = [
        {"filename": "log.txt", "content_type": "text/plain",
         "data_base64": base64.b64encode(b"boot failed with E-7731").decode()}
    ]  # fmt: skip
    answer = await (await post(http, payload)).json()
    assert await found(http.app, '"e 7731"') == {answer["messages"][0]["id"]}


# --- linking --------------------------------------------------------------------------------


async def test_a_named_account_owns_the_conversation(http: Client) -> None:
    answer = await (await post(http, transcript(1, account_id="acct-42"))).json()
    message = await Message.get(answer["messages"][0]["id"])
    assert message is not None and message.account_id == "acct-42"
    assert await Account.get("acct-42") is not None


async def test_a_known_customer_email_links_the_conversation(http: Client) -> None:
    await register_account(account_id="acct-ann", emails=["ann@example.com"], name="Ann")
    payload = transcript(1, customer={"email": "Ann@Example.com"})
    answer = await (await post(http, payload)).json()
    assert (await Message.get(answer["messages"][0]["id"])).account_id == "acct-ann"  # type: ignore[union-attr]


async def test_an_unknown_customer_is_linked_once_the_account_is_registered(http: Client) -> None:
    answer = await (await post(http, transcript(2, customer={"email": "new@example.com"}))).json()
    await register_account(account_id="acct-new", emails=["new@example.com"], name=None)
    for entry in answer["messages"]:
        assert (await Message.get(entry["id"])).account_id == "acct-new"  # type: ignore[union-attr]


# --- refusals -------------------------------------------------------------------------------


async def test_a_bad_signature_is_401_and_stores_nothing(http: Client) -> None:
    await assert_problem(await post(http, transcript(1), secret="wrong-secret-0123456789"), 401)
    assert await Message.count() == 0


async def test_a_signature_over_another_body_is_401(http: Client) -> None:
    response = await post(http, transcript(1), signed_body=json.dumps(transcript(2)).encode())
    await assert_problem(response, 401)


async def test_missing_signature_headers_are_401(http: Client) -> None:
    await assert_problem(await http.post("/webhooks/chat/widget", json=transcript(1)), 401)


@pytest.mark.parametrize("skew", [-301, 301])
async def test_a_timestamp_more_than_5_minutes_off_is_401(http: Client, skew: int) -> None:
    response = await post(http, transcript(1), timestamp=int(time.time()) + skew)
    problem = await assert_problem(response, 401)
    assert "timestamp outside the 5-minute window" in problem["detail"]
    assert await Message.count() == 0


@pytest.mark.parametrize("stamp", ["\u00b2" * 10, "\u0663" * 10, "１７００００００００"])
async def test_a_timestamp_of_other_digits_is_401(http: Client, stamp: str) -> None:
    raw = json.dumps(transcript(1)).encode()
    headers = {"X-Archive-Timestamp": stamp, "Content-Type": "application/json",
               "X-Archive-Signature": sign(WIDGET_SECRET.encode(), stamp, raw)}  # fmt: skip
    response = await http.post("/webhooks/chat/widget", data=raw, headers=headers)
    problem = await assert_problem(response, 401)
    assert "not unix seconds" in problem["detail"]


async def test_an_unknown_source_is_404(http: Client) -> None:
    await assert_problem(await post(http, transcript(1), source="nobody"), 404)


async def test_malformed_json_is_400(http: Client) -> None:
    await assert_problem(await post(http, None, body=b'{"conversation": '), 400)


async def test_invalid_utf8_is_400(http: Client) -> None:
    await assert_problem(await post(http, None, body=b'{"a": "\xff\xfe"}'), 400)


async def test_wrong_types_are_422_naming_each_bad_field(http: Client) -> None:
    payload = transcript(2)
    payload["conversation"]["id"] = 7
    payload["messages"][0]["sent_at"] = "last tuesday"
    payload["messages"][1]["author"]["role"] = "boss"
    del payload["messages"][1]["text"]
    problem = await assert_problem(await post(http, payload), 422)
    fields = {error["field"] for error in problem["errors"]}
    assert fields == {
        "conversation.id",
        "messages[0].sent_at",
        "messages[1].author.role",
        "messages[1].text",
    }
    assert await Message.count() == 0


async def test_a_time_without_timezone_is_422(http: Client) -> None:
    payload = transcript(1)
    payload["messages"][0]["sent_at"] = "2026-11-24T09:00:00"
    problem = await assert_problem(await post(http, payload), 422)
    assert problem["errors"][0]["field"] == "messages[0].sent_at"


async def test_an_empty_transcript_is_422(http: Client) -> None:
    problem = await assert_problem(
        await post(http, {"conversation": {"id": "c"}, "messages": []}), 422
    )
    assert problem["errors"][0]["field"] == "messages"


async def test_a_body_over_the_limit_is_413(http: Client) -> None:
    payload = transcript(1)
    payload["messages"][0]["text"] = "x" * (MAX_BODY + 1)
    await assert_problem(await post(http, payload), 413)
    assert await Message.count() == 0


# The chatwoot format, as Chatwoot sends it: tests/test_chatwoot.py.


# --- durability -----------------------------------------------------------------------------


async def test_a_chat_conversations_subject_is_searchable_like_an_emails(http: Client) -> None:
    await post(http, transcript(1, subject="Warranty claim"))
    message = await Message.find_one()
    assert message is not None and await found(http.app, "subject:warranty") == {str(message.id)}

"""``support-archive chatwoot backfill``, run as an operator runs it, against a local server
that answers as Chatwoot's API does (paths, auth header, pagination, payload shapes)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service.serve import build_app
from service.settings import load_settings
from store.database import Database
from store.documents import AuthorRole, Conversation, Message
from store.embedded import EmbeddedMongo
from tests.chatwoot import (
    T0,
    api_conversation,
    attachment_push_event_data,
    contact_push_event_data,
    conversation_webhook_data,
    message_push_event_data,
    message_webhook_data,
    rails_json,
    signed_headers,
    user_push_event_data,
    user_webhook_data,
)
from tests.test_chatwoot import PHOTO

SECRET = "chatwoot-secret-0123456789"
TOKEN = "wJ2mYq8rT4nKx6vB3cZ9"
ACCOUNT = 1
SINCE = T0 - timedelta(days=2)
SINCE_ARG = "2026-11-22T09:00"
CONVERSATIONS_PAGE = 25  # ConversationFinder pages with Kaminari's 25


@dataclass
class ChatwootData:
    """What a Chatwoot account holds: conversations by display id, their messages."""

    conversations: dict[int, dict[str, Any]] = field(default_factory=dict)
    messages: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


def chatwoot_api(data: ChatwootData) -> web.Application:
    def authorised(request: web.Request) -> None:
        data.requests.append(request.path_qs)
        if request.headers.get("api_access_token") != TOKEN:
            raise web.HTTPUnauthorized(
                text='{"errors":["You need to sign in or sign up before continuing."]}',
                content_type="application/json",
            )
        if request.match_info["account"] != str(ACCOUNT):
            raise web.HTTPNotFound(
                text='{"error":"Resource could not be found"}', content_type="application/json"
            )

    async def conversations(request: web.Request) -> web.Response:
        authorised(request)
        assert request.query.get("status") == "all"  # else only open ones are listed
        page = int(request.query.get("page", "1"))
        ordered = sorted(data.conversations.values(), key=lambda c: -c["last_activity_at"])
        start = (page - 1) * CONVERSATIONS_PAGE
        count = len(ordered)
        return web.Response(body=rails_json({"data": {
            "meta": {"mine_count": 0, "assigned_count": count, "unassigned_count": 0,
                     "all_count": count},
            "payload": ordered[start : start + CONVERSATIONS_PAGE],
        }}), content_type="application/json")  # fmt: skip

    async def messages(request: web.Request) -> web.Response:
        authorised(request)
        display_id = int(request.match_info["display_id"])
        if display_id not in data.messages:
            raise web.HTTPNotFound()
        found = data.messages[display_id]
        if "before" in request.query:
            found = [m for m in found if m["id"] < int(request.query["before"])]
        contact = data.conversations[display_id]["meta"]["sender"]
        return web.Response(body=rails_json({
            "meta": {"labels": [], "additional_attributes": {}, "contact": contact,
                     "agent_last_seen_at": None, "assignee_last_seen_at": None},
            "payload": found[-20:],  # MessageFinder: the 20 latest (before the id), oldest first
        }), content_type="application/json")  # fmt: skip

    async def stored_file(request: web.Request) -> web.Response:
        return web.Response(body=PHOTO, content_type="image/png")

    app = web.Application()
    app.router.add_get("/api/v1/accounts/{account}/conversations", conversations)
    app.router.add_get("/api/v1/accounts/{account}/conversations/{display_id}/messages", messages)
    app.router.add_get("/rails/active_storage/blobs/redirect/{key}/{name}", stored_file)
    return app


def fill(data: ChatwootData, origin: str) -> None:
    """30 conversations active in the window (two pages), 3 older ones; 45 messages each
    (three pages), the first 5 before the window, one an activity, one with a photo."""
    next_id = 1000
    for display_id in range(1, 34):
        recent = display_id <= 30
        last = int((T0 if recent else SINCE - timedelta(days=30)).timestamp()) - display_id
        contact = contact_push_event_data(id=100 + display_id, email=f"c{display_id}@example.com",
                                          identifier=f"acct-{display_id}")  # fmt: skip
        data.conversations[display_id] = api_conversation(
            display_id=display_id, contact=contact, last_activity_at=last,
            hmac_verified=display_id == 2,
        )  # fmt: skip
        messages = []
        for n in range(45):
            sent = last - (52 - n) * 3600  # hourly; the first 5 fall before SINCE for recent ones
            kind = 2 if n == 7 else n % 2
            sender = contact if kind == 0 else (user_push_event_data() if kind == 1 else None)
            attachments = None
            if n == 10:
                attachments = [attachment_push_event_data(
                    id=next_id, message_id=next_id, file_size=len(PHOTO),
                    data_url=f"{origin}/rails/active_storage/blobs/redirect/k{next_id}/photo.png",
                )]  # fmt: skip
            messages.append(message_push_event_data(
                id=next_id, display_id=display_id, content=f"message {n} of {display_id}",
                message_type=kind, created_at=sent, sender=sender, attachments=attachments,
            ))  # fmt: skip
            next_id += 1
        data.messages[display_id] = messages


def expected_in_window(data: ChatwootData) -> list[int]:
    since = int(SINCE.timestamp())
    return [
        m["id"] for display_id, ms in data.messages.items() if display_id <= 30
        for m in ms if m["created_at"] >= since and m["message_type"] != 2
    ]  # fmt: skip


@dataclass
class Setup:
    data: ChatwootData
    env: dict[str, str]
    http: TestClient[web.Request, web.Application]


@pytest.fixture
async def setup(database: Database, mongo: EmbeddedMongo, tmp_path: Path) -> AsyncIterator[Setup]:
    data = ChatwootData()
    async with TestServer(chatwoot_api(data)) as server:
        origin = str(server.make_url("/").origin())
        fill(data, origin)
        base = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVE_")}
        env = base | {
            "ARCHIVE_MONGODB_URI": mongo.uri, "ARCHIVE_DB_NAME": database.db.name,
            "ARCHIVE_DATA_DIR": str(tmp_path),
            "ARCHIVE_WEBHOOK_SOURCES": f"helpdesk:chatwoot:{SECRET}",
            "ARCHIVE_WEBHOOK_FETCH_ORIGINS": origin,
            "ARCHIVE_CHATWOOT_API_URL_HELPDESK": origin,
            "ARCHIVE_CHATWOOT_API_ACCOUNT_HELPDESK": str(ACCOUNT),
            "ARCHIVE_CHATWOOT_API_TOKEN_HELPDESK": TOKEN,
        }  # fmt: skip
        settings = load_settings(webhook_sources=[f"helpdesk:chatwoot:{SECRET}"])
        async with TestClient(TestServer(build_app(settings, database))) as http:
            yield Setup(data, env, http)


async def backfill(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "chatwoot", "backfill", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def webhook(setup: Setup, display_id: int, message: dict[str, Any]) -> None:
    """The message as Chatwoot's webhook delivered it before the archive went away."""
    meta = setup.data.conversations[display_id]["meta"]
    event = message_webhook_data(
        id=message["id"], content=message["content"],
        message_type="incoming" if message["message_type"] == 0 else "outgoing",
        sender=None if message["message_type"] == 0 else user_webhook_data(),
        conversation=conversation_webhook_data(display_id=display_id, contact=meta["sender"]),
    )  # fmt: skip
    if message["message_type"] == 0:
        event.pop("sender")
        event["sender"] = {k: v for k, v in meta["sender"].items() if k != "type"}
    body = rails_json(event)
    response = await setup.http.post(
        "/webhooks/chat/helpdesk", data=body, headers=signed_headers(SECRET, body)
    )
    assert response.status == 201


def assert_progress_bar(err: str, *, read: int, listed: int) -> None:
    """tqdm's frames on stderr: while reading, out of the conversations Chatwoot listed; at
    the end, the conversations of the window, all read."""
    frames = [f for f in re.split(r"[\r\n]", err) if f.startswith("backfilling helpdesk:")]
    assert frames, err
    assert any(re.search(rf" \d+/{listed} \[", f) for f in frames[:-1]), frames
    assert re.search(rf" 100%\|.*\| {read}/{read} \[", frames[-1]), frames[-1]


@pytest.mark.slow
async def test_backfill_fills_a_gap_and_run_twice_stores_nothing_twice(setup: Setup) -> None:
    # The archive got the first messages of conversation 1 by webhook, then went away.
    delivered = [m for m in setup.data.messages[1][5:10] if m["message_type"] != 2]
    for message in delivered:
        await webhook(setup, 1, message)
    expected = expected_in_window(setup.data)

    code, out, err = await backfill(setup.env, "--source", "helpdesk", "--since", SINCE_ARG)
    assert code == 0, err
    assert f"{len(expected)} messages: {len(expected) - 4} stored, 4 already" in out
    assert_progress_bar(err, read=30, listed=len(setup.data.conversations))
    stored = await Message.find_all().to_list()
    assert sorted(m.external_id for m in stored) == sorted(f"1/{i}" for i in expected)
    [conversation_1] = await Conversation.find(Conversation.external_id == "1/1").to_list()
    assert conversation_1.message_count == 39  # 45, minus 5 before the window, minus 1 activity

    code, out, err = await backfill(setup.env, "--source", "helpdesk", "--since", SINCE_ARG)
    assert code == 0, err
    assert f"{len(expected)} messages: 0 stored, {len(expected)} already" in out
    assert await Message.count() == len(expected)


@pytest.mark.slow
async def test_backfill_files_what_the_webhooks_would_have(setup: Setup) -> None:
    code, _, err = await backfill(setup.env, "--source", "helpdesk", "--since", SINCE_ARG)
    assert code == 0, err
    # older conversations and messages before the date are not read; activities not kept
    assert await Conversation.count() == 30
    assert await Message.find({"author.role": "system"}).count() == 0
    roles = {m.author.role for m in await Message.find_all().to_list()}
    assert roles == {AuthorRole.CUSTOMER, AuthorRole.AGENT}
    # the verified contact's identifier names the account; the others are linked by nothing
    linked = {c.external_id: c.account_id for c in await Conversation.find_all().to_list()}
    assert linked["1/2"] == "acct-2"
    assert {a for k, a in linked.items() if k != "1/2"} == {None}
    # attachments are fetched from Chatwoot's storage as for webhooks
    with_photo = await Message.find(Message.has_attachments == True).to_list()  # noqa: E712
    assert len(with_photo) == 30
    assert {m.attachments[0].sha256 for m in with_photo} == {hashlib.sha256(PHOTO).hexdigest()}


@pytest.mark.slow
async def test_a_refused_token_is_one_clear_line_and_stores_nothing(setup: Setup) -> None:
    env = setup.env | {"ARCHIVE_CHATWOOT_API_TOKEN_HELPDESK": "not-the-token"}
    code, _, err = await backfill(env, "--source", "helpdesk", "--since", SINCE_ARG)
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        "support-archive: Chatwoot refused the access token (401): "
        "check ARCHIVE_CHATWOOT_API_TOKEN_HELPDESK"
    )
    assert "Traceback" not in err
    assert await Message.count() == 0


@pytest.mark.slow
async def test_an_unreachable_chatwoot_is_one_clear_line(setup: Setup) -> None:
    env = setup.env | {"ARCHIVE_CHATWOOT_API_URL_HELPDESK": "http://127.0.0.1:9"}
    code, _, err = await backfill(env, "--source", "helpdesk", "--since", SINCE_ARG)
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("support-archive: cannot reach Chatwoot at http://127.0.0.1:9")
    assert last.endswith("check ARCHIVE_CHATWOOT_API_URL_HELPDESK")
    assert "Traceback" not in err


@pytest.mark.slow
async def test_a_source_without_an_api_is_one_clear_line(setup: Setup) -> None:
    code, _, err = await backfill(setup.env, "--source", "widget", "--since", SINCE_ARG)
    assert (code, err.strip()) == (
        1, "support-archive: no chatwoot source named 'widget' in ARCHIVE_WEBHOOK_SOURCES"
    )  # fmt: skip
    env = {k: v for k, v in setup.env.items() if "CHATWOOT_API" not in k}
    code, _, err = await backfill(env, "--source", "helpdesk", "--since", SINCE_ARG)
    assert code == 1 and "set ARCHIVE_CHATWOOT_API_URL_HELPDESK" in err
    code, _, err = await backfill(setup.env, "--source", "helpdesk", "--since", "last week")
    assert code == 2 and "is not a date like 2026-11-24" in err

"""Chatwoot webhooks as Chatwoot sends them: its payloads (tests/chatwoot.py), its bytes, its
signature, to the app over a real socket; its attachments served by a local "Chatwoot"."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api import views
from ingest.chat.fetch import FetchPolicy
from ingest.chat.refetch import refetch_due
from service.serve import INGEST, build_app, fetch_policy
from service.settings import load_settings
from store.accounts import register_account
from store.blobs import read_blob
from store.database import Database
from store.documents import Account, AuthorRole, Conversation, Direction, Message, Role, utcnow
from store.keys import create_key
from tests.chatwoot import (
    T0,
    agent_bot_webhook_data,
    attachment_push_event_data,
    captain_assistant_webhook_data,
    contact_push_event_data,
    contact_webhook_data,
    conversation_webhook_data,
    mail_serialized_data,
    message_webhook_data,
    message_webhook_push_event_data,
    rails_json,
    signed_headers,
    user_webhook_data,
)
from tests.helpers import found

SECRET = "chatwoot-secret-0123456789"
TRUSTED_SECRET = "trusted-chatwoot-secret-0123456789"
MAX_ATTACHMENT = 64 * 1024


def png(width: int = 8) -> bytes:
    """A real PNG image (one grey row per pixel of height)."""
    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(width))
    chunk = lambda kind, data: (  # noqa: E731
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    )
    header = struct.pack(">IIBBBBB", width, width, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + (
        chunk(b"IEND", b""))  # fmt: skip


PHOTO = png()
LATER_TEXT = b"bill of lading for the quuxcargo shipment"


@dataclass
class Server:
    """A local HTTP server and the paths it was asked for."""

    server: TestServer
    hits: list[str] = field(default_factory=list)
    back: set[str] = field(default_factory=set)  # the storage's files that answer again

    @property
    def origin(self) -> str:
        return str(self.server.make_url("/").origin())

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


def storage_app(hits: list[str], *, elsewhere: str, back: set[str]) -> web.Application:
    """Chatwoot's ActiveStorage: ``data_url`` redirects (same origin) to the disk service,
    which serves the file; ``away`` redirects to another origin. A ``later...`` file is
    unavailable (503) until its key is in ``back``."""

    async def redirect(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        key, name = request.match_info["key"], request.match_info["name"]
        if key == "away":
            raise web.HTTPFound(f"{elsewhere}/{name}")
        raise web.HTTPFound(f"/rails/active_storage/disk/{key}/{name}")

    async def disk(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        key, name = request.match_info["key"], request.match_info["name"]
        if key == "photo":
            return web.Response(body=PHOTO, content_type="image/png", headers={
                "Content-Disposition": f'inline; filename="{name}"'})  # fmt: skip
        if key == "big":
            return web.Response(body=b"x" * (MAX_ATTACHMENT + 1), content_type="text/plain")
        if key == "down":  # the storage service is unwell, and stays so
            raise web.HTTPServiceUnavailable()
        if key.startswith("later"):
            if key not in back:
                raise web.HTTPServiceUnavailable()
            if key == "later-gone":  # back, but the file was deleted meanwhile
                raise web.HTTPNotFound()
            return web.Response(body=LATER_TEXT, content_type="text/plain")
        if key == "flaky" and hits.count(request.path) == 1:  # a bad gateway, the first time
            raise web.HTTPBadGateway()
        # The connection closes before any answer, twice (aiohttp asks again by itself once).
        if key == "dropping" and hits.count(request.path) <= 2:
            assert request.transport is not None
            request.transport.close()
            raise web.HTTPBadGateway()
        if key in ("flaky", "dropping"):
            return web.Response(body=PHOTO, content_type="image/png")
        if key == "trickle":  # a byte a second: each attempt runs out of time
            response = web.StreamResponse(headers={"Content-Type": "application/pdf"})
            await response.prepare(request)
            for _ in range(120):
                await response.write(b"%")
                await asyncio.sleep(1)
            return response
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/rails/active_storage/blobs/redirect/{key}/{name}", redirect)
    app.router.add_get("/rails/active_storage/disk/{key}/{name}", disk)
    return app


def elsewhere_app(hits: list[str]) -> web.Application:
    async def anything(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        return web.Response(body=PHOTO, content_type="image/png")

    app = web.Application()
    app.router.add_get("/{tail:.*}", anything)
    return app


@dataclass
class Desk:
    """The archive's app, and the "Chatwoot" whose webhooks and files it receives."""

    http: TestClient[web.Request, web.Application]
    storage: Server
    elsewhere: Server
    fetch: FetchPolicy

    async def post(self, payload: Any, *, source: str = "helpdesk", secret: str = SECRET) -> Any:
        """Post as Chatwoot does, and return once what was acknowledged is filed (the answer
        comes once the call is spooled; the filer files it, attachments fetched, behind)."""
        body = rails_json(payload)
        headers = signed_headers(secret, body)
        # As a stream: aiohttp warns of a large body given as bytes.
        response = await self.http.post(f"/webhooks/chat/{source}", data=io.BytesIO(body),
                                        headers=headers)  # fmt: skip
        if response.status < 300:
            assert await self.http.app[INGEST].spool.empty(within=30), "not filed in time"
        return response

    def data_url(self, key: str, name: str = "photo.png") -> str:
        return self.storage.url(f"/rails/active_storage/blobs/redirect/{key}/{name}")


@pytest.fixture
async def desk(database: Database, tmp_path: Path) -> AsyncIterator[Desk]:
    async with a_desk(database, tmp_path) as running:
        yield running


@asynccontextmanager
async def a_desk(database: Database, tmp_path: Path, **settings: Any) -> AsyncIterator[Desk]:
    elsewhere = Server(TestServer(web.Application()))
    elsewhere.server = TestServer(elsewhere_app(elsewhere.hits))
    async with elsewhere.server:
        storage = Server(TestServer(web.Application()))
        storage.server = TestServer(storage_app(storage.hits, elsewhere=elsewhere.origin,
                                                back=storage.back))  # fmt: skip
        async with storage.server:
            config = load_settings(
                webhook_sources=[f"helpdesk:chatwoot:{SECRET}",
                                 f"trusted-desk:chatwoot:{TRUSTED_SECRET}:trusted"],
                webhook_fetch_origins=[storage.origin],
                smtp_max_message_bytes=MAX_ATTACHMENT, data_dir=tmp_path, **settings,
            )  # fmt: skip
            async with TestClient(TestServer(build_app(config, database))) as http:
                yield Desk(http, storage, elsewhere, fetch_policy(config))


async def only_message() -> Message:
    [message] = await Message.find_all().to_list()
    return message


# --- messages -------------------------------------------------------------------------------


async def test_an_incoming_message_is_a_customer_message(desk: Desk) -> None:
    response = await desk.post(message_webhook_data())
    assert response.status == 201
    message = await only_message()
    assert (message.direction, message.author.role) == (Direction.INBOUND, AuthorRole.CUSTOMER)
    assert (message.external_id, message.text) == ("1/501", "Hello, is my order shipped?")
    assert message.sent_at == T0
    conversation = await Conversation.get(message.conversation_id)
    assert conversation is not None
    assert (conversation.external_id, conversation.customer_emails) == ("1/3", ["ann@example.com"])


async def test_an_agent_reply_is_outbound_and_names_the_agent(desk: Desk) -> None:
    await desk.post(message_webhook_data(id=502, message_type="outgoing",
                                         sender=user_webhook_data()))  # fmt: skip
    message = await only_message()
    assert (message.direction, message.author.role) == (Direction.OUTBOUND, AuthorRole.AGENT)
    assert (message.author.name, message.author.email) == ("Maya", "maya@shop.example")


async def test_a_private_note_is_kept_as_internal(desk: Desk) -> None:
    event = message_webhook_data(
        id=503, message_type="outgoing", private=True, sender=user_webhook_data(),
        content="VIP <b>customer</b> & co",
    )  # fmt: skip
    await desk.post(event)
    message = await only_message()
    assert message.direction is Direction.INTERNAL
    assert message.text == "VIP <b>customer</b> & co"  # Rails escaped <, > and & in the JSON


async def test_the_last_chat_message_a_conversation_carries_is_not_filed_again(
    desk: Desk,
) -> None:
    # A note's conversation carries the last public message (Conversation#webhook_data), with
    # Chatwoot's enum number and unix time: it is context, not a message of this event.
    earlier = message_webhook_push_event_data(
        id=500, content="Where is it?", message_type="incoming", sender=contact_webhook_data(),
        display_id=3,
    )  # fmt: skip
    assert (earlier["message_type"], earlier["created_at"]) == (0, int(T0.timestamp()))
    note = message_webhook_data(
        id=503, message_type="outgoing", private=True, sender=user_webhook_data(),
        content="checking with the carrier",
        conversation=conversation_webhook_data(last_message=earlier),
    )  # fmt: skip
    assert note["conversation"]["account"] == {"id": 1, "name": "Shop"}
    assert (await desk.post(note)).status == 201
    message = await only_message()
    assert (message.external_id, message.text) == ("1/503", "checking with the carrier")


async def test_a_public_message_is_its_conversations_last_chat_message(desk: Desk) -> None:
    event = message_webhook_data(id=504, content="Thanks!")
    [last] = event["conversation"]["messages"]
    assert (last["id"], last["content"], last["message_type"]) == (504, "Thanks!", 0)
    assert last["sender"]["type"] == "contact"
    assert (await desk.post(event)).status == 201
    assert (await only_message()).external_id == "1/504"


@pytest.mark.parametrize(
    ("message_type", "sender", "role"),
    [
        ("outgoing", agent_bot_webhook_data(), AuthorRole.BOT),
        ("outgoing", captain_assistant_webhook_data(), AuthorRole.ASSISTANT),
        ("template", None, AuthorRole.TEMPLATE),
    ],
    ids=["agent bot", "captain assistant", "template"],
)
async def test_bots_assistants_and_templates_have_their_own_roles(
    desk: Desk, message_type: str, sender: dict[str, Any] | None, role: AuthorRole
) -> None:
    event = message_webhook_data(id=504, message_type=message_type, sender=sender)
    if sender is None:
        event["sender"] = None  # a template message has no sender
    await desk.post(event)
    message = await only_message()
    assert (message.author.role, message.direction) == (role, Direction.OUTBOUND)


async def test_messages_of_one_conversation_share_it(desk: Desk) -> None:
    await desk.post(message_webhook_data(id=1))
    await desk.post(message_webhook_data(id=2, message_type="outgoing", sender=user_webhook_data()))
    [conversation] = await Conversation.find_all().to_list()
    assert conversation.message_count == 2


async def test_an_event_that_is_not_a_message_is_acknowledged_and_ignored(desk: Desk) -> None:
    event = conversation_webhook_data() | {"event": "conversation_status_changed",
                                           "changed_attributes": [{"status": {
                                               "previous_value": "open",
                                               "current_value": "resolved"}}]}  # fmt: skip
    response = await desk.post(event)
    assert response.status == 202
    assert await response.json() == {"ignored": "conversation_status_changed"}
    assert await Message.count() == 0


async def test_a_payload_is_checked_with_chatwoots_own_headers(desk: Desk) -> None:
    body = rails_json(message_webhook_data())
    headers = signed_headers(SECRET, body)
    headers = {k.replace("X-Chatwoot", "X-Archive"): v for k, v in headers.items()}
    response = await desk.http.post("/webhooks/chat/helpdesk", data=body, headers=headers)
    assert response.status == 401
    assert await Message.count() == 0


async def test_a_message_with_an_unknown_type_is_422_naming_the_field(desk: Desk) -> None:
    response = await desk.post(message_webhook_data(message_type="fax"))
    assert response.status == 422
    assert (await response.json())["errors"][0]["field"] == "message_type"


# --- edits, deletions, status updates -------------------------------------------------------


async def test_an_edit_replaces_the_text_and_keeps_the_previous_one(desk: Desk) -> None:
    await desk.post(message_webhook_data(content="my order is 1243"))
    response = await desk.post(message_webhook_data("message_updated", content="order 1234"))
    assert response.status == 200  # nothing new, one message changed
    message = await only_message()
    assert message.text == "order 1234"
    assert [v.text for v in message.history] == ["my order is 1243"]
    assert await found(desk.http.app, "1234") == {str(message.id)}
    assert await found(desk.http.app, "1243") == set()


async def test_a_deletion_keeps_the_archived_text_and_marks_it_deleted(desk: Desk) -> None:
    await desk.post(message_webhook_data(content="my card is 4970 1234"))
    # messages_controller#destroy: the text is replaced and content_attributes says deleted
    deleted = message_webhook_data(
        "message_updated", content="This message was deleted",
        content_attributes={"deleted": True},
    )  # fmt: skip
    assert (await desk.post(deleted)).status == 200
    message = await only_message()
    assert message.text == "my card is 4970 1234"
    assert message.history == []
    assert message.deleted_at_source is not None

    _, token = await create_key(name="reader", role=Role.AGENT)
    view = await desk.http.get(
        f"/api/v1/messages/{message.id}", headers={"Authorization": f"Bearer {token}"}
    )
    shown = await view.json()
    assert shown["text"] == "my card is 4970 1234"
    assert shown["deleted_at_source"] is not None


async def test_a_status_only_update_writes_nothing(desk: Desk, database: Database) -> None:
    # A message's delivery status (sent, delivered, read) is not in webhook_data: Chatwoot
    # sends message_updated with the same payload as before.
    await desk.post(message_webhook_data(content="Hello"))
    before = await database.db["messages"].find_one()
    conversation_before = await database.db["conversations"].find_one()
    response = await desk.post(message_webhook_data("message_updated", content="Hello"))
    assert response.status == 200
    assert (await response.json())["messages"][0]["duplicate"] is True
    assert await database.db["messages"].find_one() == before
    assert await database.db["conversations"].find_one() == conversation_before


# --- email through Chatwoot -----------------------------------------------------------------


async def test_an_email_through_chatwoot_keeps_its_subject_and_html(desk: Desk) -> None:
    html = "<p>The parcel never came &amp; the tracking says <b>delivered</b>.</p>"
    text = "The parcel never came & the tracking says delivered."
    email = mail_serialized_data(subject="Parcel #7781 not delivered", text=text, html=html)
    event = message_webhook_data(
        content=text, content_type="incoming_email",
        content_attributes={"email": email, "cc_email": None, "bcc_email": None},
        conversation=conversation_webhook_data(channel="Channel::Email"),
    )  # fmt: skip
    assert (await desk.post(event)).status == 201
    message = await only_message()
    assert (message.subject, message.html) == ("Parcel #7781 not delivered", html)
    assert message.text == text
    assert await found(desk.http.app, "subject:parcel 7781") == {str(message.id)}
    conversation = await Conversation.get(message.conversation_id)
    assert conversation is not None and conversation.subject == "Parcel #7781 not delivered"


async def test_a_text_longer_than_the_archive_keeps_is_accepted_and_cut(desk: Desk) -> None:
    # Chatwoot never sends an event again: refusing it (422) would lose the message.
    # (A mail's full text: Chatwoot bounds a message's content to 150,000 characters, not it.)
    text = "The log of the failed payment follows. " + "x" * 2_100_000
    email = mail_serialized_data(subject="Payment failed", text="See the log.", html="<p>Log</p>")
    email["text_content"]["full"] = text
    event = message_webhook_data(content="See the log.", content_type="incoming_email",
                                 content_attributes={"email": email})  # fmt: skip
    assert (await desk.post(event)).status == 201
    message = await only_message()
    assert message.body_truncated and text.startswith(message.text)
    assert len(message.text.encode()) == 2 * 1024 * 1024


async def test_a_subject_longer_than_a_header_line_is_accepted_and_cut(desk: Desk) -> None:
    subject = "Re: " * 3000 + "parcel"
    email = mail_serialized_data(subject=subject, text="still nothing", html="<p>still</p>")
    event = message_webhook_data(content="still nothing", content_type="incoming_email",
                                 content_attributes={"email": email})  # fmt: skip
    assert (await desk.post(event)).status == 201
    message = await only_message()
    assert message.subject == subject[:998]
    conversation = await Conversation.get(message.conversation_id)
    assert conversation is not None and conversation.subject == subject[:998]


async def test_a_message_without_its_required_fields_is_still_refused(desk: Desk) -> None:
    event = message_webhook_data()
    del event["conversation"]
    response = await desk.post(event)
    assert response.status == 422
    assert (await response.json())["errors"][0]["field"] == "conversation"


# --- who the customer is --------------------------------------------------------------------


def with_identifier(identifier: str, *, hmac_verified: bool | None) -> dict[str, Any]:
    contact = contact_push_event_data(identifier=identifier)
    return message_webhook_data(
        conversation=conversation_webhook_data(contact=contact, hmac_verified=hmac_verified)
    )


@pytest.mark.parametrize("hmac_verified", [False, None], ids=["false", "absent"])
async def test_an_unverified_identifier_neither_creates_nor_links_an_account(
    desk: Desk, hmac_verified: bool | None
) -> None:
    await register_account(account_id="acct-victim", emails=["victim@example.com"], name=None)
    await desk.post(with_identifier("acct-victim", hmac_verified=hmac_verified))
    await desk.post(with_identifier("acct-new", hmac_verified=hmac_verified) | {"id": 502})
    assert {m.account_id for m in await Message.find_all().to_list()} == {None}
    assert await Account.get("acct-new") is None


async def test_an_unverified_contact_is_linked_by_its_email_as_mail_is(desk: Desk) -> None:
    await register_account(account_id="acct-ann", emails=["ann@example.com"], name="Ann")
    await desk.post(with_identifier("acct-someone-else", hmac_verified=False))
    assert (await only_message()).account_id == "acct-ann"


async def test_a_verified_identifier_names_the_account(desk: Desk) -> None:
    await desk.post(with_identifier("acct-cw-9", hmac_verified=True))
    assert (await only_message()).account_id == "acct-cw-9"
    assert await Account.get("acct-cw-9") is not None


async def test_a_trusted_sources_identifier_names_the_account(desk: Desk) -> None:
    event = with_identifier("acct-cw-10", hmac_verified=False)
    await desk.post(event, source="trusted-desk", secret=TRUSTED_SECRET)
    assert (await only_message()).account_id == "acct-cw-10"


# --- attachments ----------------------------------------------------------------------------


def image_message(data_url: str, *, file_size: int = len(PHOTO)) -> dict[str, Any]:
    attachment = attachment_push_event_data(data_url=data_url, file_size=file_size,
                                            extension="png")  # fmt: skip
    return message_webhook_data(content=None, attachments=[attachment])


async def test_an_image_from_an_allowed_origin_is_stored_as_served(desk: Desk) -> None:
    response = await desk.post(image_message(desk.data_url("photo")))
    assert response.status == 201
    message = await only_message()
    [attachment] = message.attachments
    assert attachment.sha256 == hashlib.sha256(PHOTO).hexdigest()
    assert (attachment.filename, attachment.content_type) == ("photo.png", "image/png")
    assert await read_blob(attachment.sha256) == PHOTO
    assert message.has_attachments and message.unfetched_attachments == []
    assert desk.storage.hits == [
        "/rails/active_storage/blobs/redirect/photo/photo.png",
        "/rails/active_storage/disk/photo/photo.png",
    ]


async def test_an_attachment_from_an_origin_not_allowed_is_kept_as_metadata(
    desk: Desk,
) -> None:
    url = desk.elsewhere.url("/rails/active_storage/blobs/redirect/photo/photo.png")
    assert (await desk.post(image_message(url))).status == 201
    message = await only_message()
    assert message.attachments == []
    [kept] = message.unfetched_attachments
    assert (kept.filename, kept.size) == ("photo.png", len(PHOTO))
    assert kept.origin == desk.elsewhere.origin
    assert "ARCHIVE_WEBHOOK_FETCH_ORIGINS" in kept.reason
    assert desk.elsewhere.hits == []  # nothing was asked of it


async def test_a_redirect_to_another_origin_is_not_followed(desk: Desk) -> None:
    assert (await desk.post(image_message(desk.data_url("away")))).status == 201
    message = await only_message()
    assert message.attachments == []
    assert "redirected" in message.unfetched_attachments[0].reason
    assert desk.storage.hits == ["/rails/active_storage/blobs/redirect/away/photo.png"]
    assert desk.elsewhere.hits == []


async def test_a_failed_fetch_is_noted_and_the_message_is_stored(desk: Desk) -> None:
    event = image_message(desk.data_url("gone"))
    event["content"] = "see the photo"
    assert (await desk.post(event)).status == 201
    message = await only_message()
    assert message.text == "see the photo"
    assert message.unfetched_attachments[0].reason == "answered HTTP 404"


@pytest.mark.parametrize("key", ["flaky", "dropping"], ids=["HTTP 502", "connection closed"])
async def test_a_fetch_that_fails_at_first_is_retried_and_stored(desk: Desk, key: str) -> None:
    assert (await desk.post(image_message(desk.data_url(key)))).status == 201
    message = await only_message()
    [attachment] = message.attachments
    assert attachment.sha256 == hashlib.sha256(PHOTO).hexdigest()
    assert message.unfetched_attachments == []


async def test_a_trickling_server_costs_one_deadline_and_delays_no_other_attachment(
    database: Database, tmp_path: Path
) -> None:
    """Before: three attempts of 30 s each, one link after the other, held filing 96 s."""
    async with a_desk(database, tmp_path, webhook_fetch_timeout="2s") as desk:
        event = message_webhook_data(content=None, attachments=[
            attachment_push_event_data(data_url=desk.data_url("trickle", "scan.pdf"),
                                       file_size=120, file_type="file"),
            attachment_push_event_data(id=2, data_url=desk.data_url("photo"), file_size=8),
        ])  # fmt: skip
        assert (await desk.post(event)).status == 201  # filed within desk.post's 30 s
    message = await only_message()
    [photo] = message.attachments
    assert photo.sha256 == hashlib.sha256(PHOTO).hexdigest()
    [slow] = message.unfetched_attachments
    assert slow.reason == "not fetched within 2s, all attempts"


async def test_a_fetch_that_keeps_failing_is_retried_a_few_times_then_noted(desk: Desk) -> None:
    assert (await desk.post(image_message(desk.data_url("down")))).status == 201
    message = await only_message()
    assert message.attachments == []
    assert message.unfetched_attachments[0].reason == "answered HTTP 503 (3 attempts)"
    assert desk.storage.hits.count("/rails/active_storage/disk/down/photo.png") == 3


async def test_a_fetch_refused_for_good_is_not_retried(desk: Desk) -> None:
    assert (await desk.post(image_message(desk.data_url("gone")))).status == 201
    assert desk.storage.hits.count("/rails/active_storage/disk/gone/photo.png") == 1


async def test_an_attachment_over_the_limit_is_not_fetched_whole(desk: Desk) -> None:
    # file_size understates it: the limit holds on what is actually served.
    event = image_message(desk.data_url("big", "log.txt"), file_size=10)
    assert (await desk.post(event)).status == 201
    message = await only_message()
    assert message.attachments == []
    assert "larger than" in message.unfetched_attachments[0].reason


# --- fetched again later --------------------------------------------------------------------


def later_message(key: str) -> dict[str, Any]:
    attachment = attachment_push_event_data(data_url=f"{key}", file_size=len(LATER_TEXT),
                                            file_type="file", extension="txt")  # fmt: skip
    return message_webhook_data(content="the bill is attached", attachments=[attachment])


async def post_unanswered(desk: Desk, key: str) -> Message:
    event = later_message(desk.data_url(key, "bill.txt"))
    assert (await desk.post(event)).status == 201
    return await only_message()


def after(minutes: float) -> datetime:
    return utcnow() + timedelta(minutes=minutes)


async def test_an_attachment_whose_server_did_not_answer_is_fetched_again_later(
    desk: Desk,
) -> None:
    """Filed at once without it (holding no other message back); fetched again behind the
    filing once its server answers, blob, reference and searchable text."""
    message = await post_unanswered(desk, "later")
    assert message.text == "the bill is attached" and message.attachments == []
    [waiting] = message.unfetched_attachments
    assert waiting.retry is not None and waiting.retry.attempts == 1
    assert message.refetch_at == waiting.retry.next_at
    desk.storage.back.add("later")

    assert (await refetch_due(desk.fetch, now=after(0.5))).fetched == 0  # not due yet
    report = await refetch_due(desk.fetch, now=after(2))

    assert (report.fetched, report.messages, report.later) == (1, 1, 0)
    message = await only_message()
    [bill] = message.attachments
    assert await read_blob(bill.sha256) == LATER_TEXT
    assert (bill.filename, bill.content_type) == ("bill.txt", "text/plain")
    assert message.has_attachments and "quuxcargo" in message.attachment_text
    assert message.unfetched_attachments == [] and message.refetch_at is None


async def test_the_link_of_an_attachment_to_fetch_again_is_never_shown(desk: Desk) -> None:
    message = await post_unanswered(desk, "later")
    view = views.message(message)
    [shown] = view["unfetched_attachments"]
    assert "retry" not in shown and "/rails/" not in json.dumps(view, default=str)
    assert shown["origin"] == desk.storage.origin


async def test_a_link_still_unanswered_is_tried_less_often_then_given_up_after_a_day(
    desk: Desk,
) -> None:
    message = await post_unanswered(desk, "later")
    first = message.refetch_at
    assert first is not None
    report = await refetch_due(desk.fetch, now=after(2))
    assert (report.later, report.given_up) == (1, 0)
    message = await only_message()
    [waiting] = message.unfetched_attachments
    assert waiting.retry is not None and waiting.retry.attempts == 2
    assert waiting.retry.next_at - first > timedelta(minutes=3)  # four times longer

    report = await refetch_due(desk.fetch, now=after(25 * 60))
    assert (report.later, report.given_up) == (0, 1)
    message = await only_message()
    [given_up] = message.unfetched_attachments
    assert given_up.retry is None and message.refetch_at is None  # the URL is forgotten
    assert given_up.reason == "answered HTTP 503 (3 attempts); given up after 3 fetches"


async def test_a_link_refused_for_good_on_a_later_try_is_given_up_at_once(desk: Desk) -> None:
    await post_unanswered(desk, "later-gone")
    desk.storage.back.add("later-gone")
    report = await refetch_due(desk.fetch, now=after(2))
    assert (report.fetched, report.given_up) == (0, 1)
    [given_up] = (await only_message()).unfetched_attachments
    assert given_up.retry is None
    assert given_up.reason == "answered HTTP 404; given up after 2 fetches"


async def test_a_deleted_accounts_message_is_not_completed(desk: Desk) -> None:
    message = await post_unanswered(desk, "later")
    await message.set({"purge_due_at": utcnow()})
    desk.storage.back.add("later")
    hits = len(desk.storage.hits)
    assert (await refetch_due(desk.fetch, now=after(2))).fetched == 0
    assert len(desk.storage.hits) == hits  # nothing was asked for it
    assert (await only_message()).attachments == []

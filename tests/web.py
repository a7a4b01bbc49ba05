"""The web interface on a live app (as ``serve`` builds it, plus ``add_web``), signed-in
clients of each role, and test data for its pages."""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from aiohttp import ClientResponse, ClientSession, CookieJar, web
from aiohttp.test_utils import TestServer

from api.state import SEARCH
from service.serve import build_app
from service.settings import load_settings
from store.accounts import register_account
from store.chat import ChatBatch, NewChatMessage, file_chat
from store.database import Database
from store.documents import Author, AuthorRole, Direction, Message, Role, utcnow
from store.keys import create_key
from tests.factories import T0, email
from web.app import add_web

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PAGE_CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"


@dataclass
class Web:
    """A live app serving the web interface, and a token for each role."""

    server: TestServer
    tokens: dict[Role, str]
    sessions: list[ClientSession] = field(default_factory=list)

    @property
    def app(self) -> web.Application:
        return self.server.app

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def client(self) -> ClientSession:
        """A browser-like client of its own (its own cookies), not signed in."""
        session = ClientSession(
            base_url=self.url("/"), cookie_jar=CookieJar(unsafe=True)
        )  # fmt: skip
        self.sessions.append(session)
        return session

    async def signed_in(self, role: Role) -> ClientSession:
        session = self.client()
        response = await sign_in(session, self.tokens[role])
        assert response.status == 303, await response.text()
        return session

    async def indexed(self) -> None:
        await self.app[SEARCH].sync()


async def sign_in(session: ClientSession, token: str, *, next_path: str = "/") -> ClientResponse:
    form = await session.get("/signin")
    csrf = csrf_of(await form.text())
    return await session.post(
        "/signin", data={"csrf": csrf, "key": token, "next": next_path}, allow_redirects=False
    )


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found, "the page has no form with a CSRF token"
    return found[1]


async def csrf_for(session: ClientSession, path: str) -> str:
    return csrf_of(await (await session.get(path)).text())


@asynccontextmanager
async def running_web(
    database: Database, tmp_path: Path, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[Web]:
    settings = load_settings(
        data_dir=tmp_path,
        audit_max_age=timedelta(days=30),
        secret_key="test-secret-key-0123456789abcdef0123456789",
    )
    tokens = {role: (await create_key(name=f"{role}-key", role=role))[1] for role in Role}
    app = build_app(settings, database)
    add_web(app)
    server = TestServer(app, host="127.0.0.1", scheme="https" if tls else "http")
    await server.start_server(ssl=tls)
    web_ = Web(server, tokens)
    try:
        yield web_
    finally:
        for session in web_.sessions:
            await session.close()
        await server.close()


# --- data -----------------------------------------------------------------------------------


@dataclass
class Story:
    """An account with an email thread (with an attachment and an HTML part) and a chat with
    an internal note."""

    account_id: str
    email: Message
    reply: Message
    chat: Message
    note: Message


async def a_story(account_id: str = "acct-1") -> Story:
    await register_account(account_id=account_id, emails=["ann@example.com"], name="Ann Customer")
    first = await email(
        subject="Refund for my kettle",
        body="Hello, I would like a refund for the broken kettle, order 1234.",
        html="<p>Hello, I would like a <b>refund</b>.</p>",
        attachments=[("receipt.txt", "text/plain", b"kettle 49.00 EUR")],
        at=T0,
    )
    reply = await email(
        subject="Re: Refund for my kettle",
        sender="Sam Support <sam@shop.example>",
        to="ann@example.com",
        body="Hi Ann, the refund is on its way.",
        in_reply_to=first.message_id_header and f"<{first.message_id_header}>",
        at=T0 + timedelta(hours=2),
    )
    chat = await chat_message("Is my refund processed?", account_id=account_id)
    note = await chat_message(
        "Customer was refunded already, see ticket 77.", account_id=account_id,
        role=AuthorRole.AGENT, direction=Direction.INTERNAL,
    )  # fmt: skip
    return Story(account_id, first, reply, chat, note)


async def chat_message(
    text: str,
    *,
    account_id: str | None,
    role: AuthorRole = AuthorRole.CUSTOMER,
    direction: Direction = Direction.INBOUND,
    conversation: str = "chat-web-1",
) -> Message:
    count = await Message.find({"channel": "chat"}).count()
    filed = await file_chat(
        ChatBatch(
            source="widget", conversation_id=conversation, received_at=utcnow(),
            account_id=account_id,
            messages=[NewChatMessage(
                external_id=f"web-{count}", author=Author(role=role, name=role.value.title()),
                direction=direction, text=text, sent_at=T0 + timedelta(minutes=10 + count),
            )],
        )
    )  # fmt: skip
    message = await Message.get(filed.messages[0].id)
    assert message is not None
    return message

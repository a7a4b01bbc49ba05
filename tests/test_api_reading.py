"""Reading over the API: conversations in order, messages, raw bytes, attachments, audit."""

from __future__ import annotations

from datetime import timedelta

import pytest

from store.accounts import mark_deleted
from store.documents import AuditEvent, Role, utcnow
from tests.conftest import Api
from tests.factories import T0, chat, email
from tests.mail import make_email


async def test_a_conversation_lists_its_messages_in_order(api: Api) -> None:
    first = await chat("first", at=T0 + timedelta(minutes=1))
    await chat("second", at=T0 + timedelta(minutes=3))
    await chat("between", at=T0 + timedelta(minutes=2))
    body = await (
        await api.get(f"/api/v1/conversations/{first.conversation_id}", Role.AGENT)
    ).json()
    assert [m["text"] for m in body["messages"]] == ["first", "between", "second"]
    assert body["channel"] == "chat"


async def test_a_message_is_shown_with_its_attachments(api: Api) -> None:
    message = await email(attachments=[("r.pdf", "application/pdf", b"%PDF-")])
    body = await (await api.get(f"/api/v1/messages/{message.id}", Role.AGENT)).json()
    assert body["subject"] == "Where is my order?"
    assert body["attachments"][0]["filename"] == "r.pdf"
    assert body["attachments"][0]["url"].endswith(f"/messages/{message.id}/attachments/0")


async def test_the_raw_download_is_byte_identical_rfc822(api: Api) -> None:
    raw = make_email(message_id="<raw@example.com>", body="Grüße, ça va?")
    message = await email(message_id="<raw@example.com>", body="Grüße, ça va?")
    response = await api.get(f"/api/v1/messages/{message.id}/raw", Role.AGENT)
    assert response.status == 200
    assert response.content_type == "message/rfc822"
    assert await response.read() == raw


async def test_a_chat_message_has_no_raw_download(api: Api) -> None:
    message = await chat("hello")
    assert (await api.get(f"/api/v1/messages/{message.id}/raw", Role.AGENT)).status == 404


@pytest.mark.parametrize(
    ("filename", "disposition"),
    [
        ("invoice.pdf", 'attachment; filename="invoice.pdf"; filename*=UTF-8\'\'invoice.pdf'),
        ("../../etc/passwd",
         "attachment; filename=\"_.._etc_passwd\"; filename*=UTF-8''_.._etc_passwd"),
        ("Rechnung März.pdf", "attachment; filename=\"Rechnung M_rz.pdf\"; "
                              "filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf"),
        ('evil"\r\nX-Injected: 1.html', "attachment; filename=\"evil_X-Injected: 1.html\"; "
                                        "filename*=UTF-8''evil%22X-Injected%3A%201.html"),
    ],
)  # fmt: skip
async def test_attachments_download_under_a_safe_name(
    api: Api, filename: str, disposition: str
) -> None:
    message = await email(attachments=[("x.bin", "application/octet-stream", b"payload")])
    message.attachments[0].filename = filename
    await message.save()
    response = await api.get(f"/api/v1/messages/{message.id}/attachments/0", Role.AGENT)
    assert response.status == 200
    assert await response.read() == b"payload"
    assert response.headers["Content-Disposition"] == disposition
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_an_attachment_keeps_its_content_type_unless_it_is_malformed(api: Api) -> None:
    message = await email(attachments=[("a.png", "image/png", b"\x89PNG")])
    response = await api.get(f"/api/v1/messages/{message.id}/attachments/0", Role.AGENT)
    assert response.content_type == "image/png"
    message.attachments[0].content_type = "text/html; <script>"
    await message.save()
    response = await api.get(f"/api/v1/messages/{message.id}/attachments/0", Role.AGENT)
    assert response.content_type == "application/octet-stream"


PATHS_WITH_IDS = [
    "/api/v1/messages/{}",
    "/api/v1/messages/{}/attachments/9",
    "/api/v1/messages/{}/attachments/-1",
    "/api/v1/conversations/{}",
]


@pytest.mark.parametrize("path", PATHS_WITH_IDS)
async def test_unknown_or_malformed_ids_are_404(api: Api, path: str) -> None:
    for ident in ("0" * 24, "not-an-id", "..%2F..%2F", "%24ne"):
        response = await api.get(path.format(ident), Role.AGENT)
        assert response.status == 404, path.format(ident)


async def test_agents_cannot_read_a_deleted_accounts_content_but_compliance_can(api: Api) -> None:
    message = await email(account_id="acct-gone")
    await mark_deleted(account_id="acct-gone", deleted_at=utcnow(), grace=timedelta(days=180))
    for path in (f"/api/v1/messages/{message.id}", f"/api/v1/messages/{message.id}/raw",
                 f"/api/v1/conversations/{message.conversation_id}"):  # fmt: skip
        assert (await api.get(path, Role.AGENT)).status == 404, path
        assert (await api.get(path, Role.COMPLIANCE)).status == 200, path


@pytest.mark.parametrize(
    ("path", "action"),
    [
        ("/api/v1/messages/{m}", "message.read"),
        ("/api/v1/messages/{m}/raw", "message.raw"),
        ("/api/v1/messages/{m}/attachments/0", "attachment.read"),
        ("/api/v1/conversations/{c}", "conversation.read"),
        ("/api/v1/accounts/acct-7", "account.read"),
        ("/api/v1/search?q=order&account_id=acct-7", "search"),
    ],
)
async def test_every_read_is_an_audit_event(api: Api, path: str, action: str) -> None:
    message = await email(account_id="acct-7", attachments=[("a.txt", "text/plain", b"x")])
    url = path.format(m=message.id, c=message.conversation_id)
    assert (await api.get(url, Role.AGENT)).status == 200
    [event] = await AuditEvent.find(AuditEvent.action == action).to_list()
    assert (event.actor, event.role, event.client_address) == ("agent-key", Role.AGENT, "127.0.0.1")
    assert event.target["account_id"] == "acct-7"
    assert event.expires_at - event.at == timedelta(days=30)
    if action == "search":
        assert event.query["q"] == "order"


async def test_registering_an_account_is_an_audit_event(api: Api) -> None:
    await api.put("/api/v1/accounts/acct-3", Role.PLATFORM, json={"emails": []})
    [event] = await AuditEvent.find(AuditEvent.action == "account.update").to_list()
    assert (event.actor, event.target) == ("platform-key", {"account_id": "acct-3"})


async def test_the_audit_trail_filters_and_pages_without_gaps(api: Api) -> None:
    for n in range(7):
        await api.get(f"/api/v1/accounts/missing-{n}", Role.AGENT)
    seen, cursor = [], None
    while True:
        query = "?action=account.read&limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await (await api.get(f"/api/v1/audit{query}")).json()
        seen += [e["target"]["account_id"] for e in page["events"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == [f"missing-{n}" for n in reversed(range(7))]


async def test_no_response_that_carries_personal_data_is_kept_in_a_cache(api: Api) -> None:
    message = await email(attachments=[("r.pdf", "application/pdf", b"%PDF-")])
    paths = [f"/api/v1/messages/{message.id}", f"/api/v1/messages/{message.id}/raw",
             f"/api/v1/messages/{message.id}/attachments/0",
             f"/api/v1/conversations/{message.conversation_id}", "/api/v1/search?q=order",
             "/api/v1/messages/000000000000000000000000"]  # fmt: skip
    for path in paths:
        response = await api.get(path, Role.AGENT)
        assert response.headers.get("Cache-Control") == "no-store", path

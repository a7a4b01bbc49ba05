"""Reading conversations, messages, original ``.eml`` bytes and attachments."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from aiohttp import web

from api import params, views
from api.auth import principal_of
from api.trail import audited
from store import reading
from store.documents import Message, Role

# Seconds after which a message still being filed is worth asking for again.
FILING_RETRY_AFTER = 5
_SAFE_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


def _sees_restricted(request: web.Request) -> bool:
    return principal_of(request).role is not Role.AGENT


async def get_conversation(request: web.Request) -> web.Response:
    ident = params.object_id(request, "conversation_id", what="conversation")
    found = await reading.conversation_or_filing(
        conversation_id=ident, include_restricted=_sees_restricted(request)
    )
    if isinstance(found, reading.ConversationFiling):
        await audited(request, "conversation.read", target=_target(None, conversation_id=ident))
        return web.json_response(views.conversation_filing(found))
    conversation, messages = found
    await audited(
        request, "conversation.read", target=_target(conversation.account_id, conversation_id=ident)
    )
    return web.json_response(views.conversation(conversation, messages))


async def get_message(request: web.Request) -> web.Response:
    found = await _message_or_filing(request)
    if isinstance(found, reading.Filing):
        await audited(request, "message.read", target=_target(None, message_id=found.id))
        return web.json_response(views.filing(found))
    await audited(request, "message.read", target=_target(found.account_id, message_id=found.id))
    return web.json_response(views.message(found))


async def get_raw(request: web.Request) -> web.Response:
    found = await _message_or_filing(request)
    if isinstance(found, reading.Filing):
        # Which account it belongs to is known once it is filed: until then only the roles
        # that may read a deleted account's mail read it (purpose limitation). A chat message
        # has no original, spooled or filed: that is said to everyone.
        if not found.chat and not _sees_restricted(request):
            raise _being_filed(found, "its original can be read by agents")
        data = await reading.spooled_raw(found)
        await audited(request, "message.raw", target=_target(None, message_id=found.id))
        return _eml(found.id, data)
    data = await reading.raw_bytes(found)
    await audited(request, "message.raw", target=_target(found.account_id, message_id=found.id))
    return _eml(found.id, data)


def _being_filed(filing: reading.Filing, what: str) -> web.HTTPServiceUnavailable:
    return web.HTTPServiceUnavailable(
        text=f"message {filing.id} is being filed; {what} once it is",
        headers={"Retry-After": str(FILING_RETRY_AFTER)},
    )


def _eml(message_id: object, data: bytes) -> web.Response:
    return web.Response(
        body=data,
        content_type="message/rfc822",
        headers={
            "Content-Disposition": f'attachment; filename="{message_id}.eml"',
            "X-Content-Type-Options": "nosniff",
        },
    )


async def get_attachment(request: web.Request) -> web.Response:
    found = await _message_or_filing(request)
    if isinstance(found, reading.Filing):
        raise _being_filed(found, "its attachments are listed")
    n = request.match_info["n"]
    if not n.isdigit() or len(n) > 4:
        raise web.HTTPNotFound(text=f"no attachment {n!r}")
    ref, data = await reading.attachment(found, int(n))
    target = _target(found.account_id, message_id=found.id) | {"attachment": n}
    await audited(request, "attachment.read", target=target)
    content_type = ref.content_type.lower() if _SAFE_TYPE.match(ref.content_type.lower()) else ""
    return web.Response(
        body=data,
        content_type=content_type or "application/octet-stream",
        headers={
            # Never rendered in the API's origin: whatever the sender called it, it downloads.
            "Content-Disposition": content_disposition(ref.filename or f"attachment-{n}"),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
        },
    )


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact name in RFC 6266 form."""
    cleaned = "".join(c for c in filename if unicodedata.category(c)[0] != "C")
    cleaned = cleaned.replace("/", "_").replace("\\", "_").strip(" .") or "attachment"
    fallback = "".join(c if c.isascii() and c not in '"%;' else "_" for c in cleaned)
    return f"attachment; filename=\"{fallback[:150]}\"; filename*=UTF-8''{quote(cleaned[:150])}"


async def _message(request: web.Request) -> Message:
    ident = params.object_id(request, "message_id", what="message")
    return await reading.message(message_id=ident, include_restricted=_sees_restricted(request))


async def _message_or_filing(request: web.Request) -> Message | reading.Filing:
    ident = params.object_id(request, "message_id", what="message")
    return await reading.message_or_filing(
        message_id=ident, include_restricted=_sees_restricted(request)
    )


def _target(account_id: str | None, **ids: object) -> dict[str, str]:
    return {"account_id": account_id or "", **{name: str(v) for name, v in ids.items()}}

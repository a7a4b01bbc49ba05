"""``POST /webhooks/chat/{source}``: verify, parse with the source's format, spool (or journal),
answer. Filing happens behind the answer (``ingest.chat.filing``, run by the filer)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from ingest.chat.chatwoot import CHATWOOT
from ingest.chat.formats import ChatFormat, Ignored
from ingest.chat.generic import GENERIC
from ingest.chat.generic import Payload as GenericPayload
from ingest.chat.signature import BadSignature, verify
from store.chat import ChatBatch
from store.chat_spool import ChatCall, SpooledChat
from store.documents import utcnow
from store.errors import is_transient
from store.journal import JournalFull

log = logging.getLogger("archive.chat")

FORMATS: Mapping[str, ChatFormat] = {f.name: f for f in (GENERIC, CHATWOOT)}

CHAT_MESSAGES = Counter(
    "archive_chat_messages_total", "Chat messages received by webhook", ["source", "outcome"]
)  # stored, duplicate
CHAT_REQUESTS = Counter(
    "archive_chat_requests_total", "Chat webhook calls by outcome", ["source", "outcome"]
)  # spooled, journaled, ignored, unauthorized, invalid, tempfail, full

# Seconds a sender is asked to wait when the journal is full.
JOURNAL_FULL_RETRY_AFTER = 60


@dataclass(frozen=True)
class Journaled:
    """The call is in the local journal (the database could not take it in time)."""


# Puts a validated call durably in the spool (naming ids), or in the journal.
Accept = Callable[[ChatCall], Awaitable[SpooledChat | Journaled]]


@dataclass(frozen=True)
class Source:
    name: str
    format: ChatFormat
    secret: bytes
    trusted: bool = False


class ChatWebhook:
    def __init__(
        self,
        *,
        sources: Mapping[str, Source],
        accept: Accept,
        max_body_bytes: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sources = sources
        self._accept = accept
        self._max_body_bytes = max_body_bytes
        self._clock = clock

    async def handle(self, request: web.Request) -> web.Response:
        source = self._sources.get(request.match_info["source"])
        if source is None:
            raise web.HTTPNotFound(text="no webhook source of that name is configured")
        body = await self._read_body(request)
        now = self._clock()
        self._verify(request, source, body, now)
        try:
            batch = parse_call(source, body, now)
        except Exception:
            CHAT_REQUESTS.labels(source.name, "invalid").inc()
            raise
        if isinstance(batch, Ignored):
            CHAT_REQUESTS.labels(source.name, "ignored").inc()
            return web.json_response({"ignored": batch.event}, status=202)
        return await self._spool(source, call_of(source, body, now, batch))

    async def _read_body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self._max_body_bytes:
            raise web.HTTPRequestEntityTooLarge(
                max_size=self._max_body_bytes, actual_size=request.content_length
            )
        body = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > self._max_body_bytes:
                raise web.HTTPRequestEntityTooLarge(
                    max_size=self._max_body_bytes, actual_size=len(body)
                )
        return bytes(body)

    def _verify(self, request: web.Request, source: Source, body: bytes, now: datetime) -> None:
        headers = source.format.headers
        try:
            verify(
                secret=source.secret,
                timestamp=request.headers.get(headers.timestamp),
                signature=request.headers.get(headers.signature),
                body=body,
                now=now,
            )
        except BadSignature as exc:
            log.warning("refused a %s webhook from %s: %s", source.name, request.remote, exc)
            CHAT_REQUESTS.labels(source.name, "unauthorized").inc()
            # What is wrong with the timestamp may be said (a sender's clock, not a secret);
            # of the signature only that it does not match.
            timing = str(exc) if "timestamp" in str(exc) else None
            raise web.HTTPUnauthorized(
                text=timing or f"missing or invalid {headers.signature} / {headers.timestamp}"
            ) from None

    async def _spool(self, source: Source, call: ChatCall) -> web.Response:
        try:
            accepted = await self._accept(call)
        except (JournalFull, OSError) as exc:
            # Nothing was stored: the only answer that does not lose the call is "retry".
            full = isinstance(exc, JournalFull)
            CHAT_REQUESTS.labels(source.name, "full" if full else "tempfail").inc()
            log.error("%s: database away and journal %s: answered 503", source.name,
                      "full" if full else f"not writable ({type(exc).__name__})")  # fmt: skip
            raise web.HTTPServiceUnavailable(
                text="the archive cannot store this call now; retry later",
                headers={"Retry-After": str(JOURNAL_FULL_RETRY_AFTER)},
            ) from None
        except Exception as exc:
            if is_transient(exc):
                CHAT_REQUESTS.labels(source.name, "tempfail").inc()
            raise  # the problem middleware answers 503 + Retry-After for transient failures
        if isinstance(accepted, Journaled):
            return self._journaled(source, call)
        return self._spooled(source, accepted)

    def _spooled(self, source: Source, spooled: SpooledChat) -> web.Response:
        stored = sum(not m.duplicate for m in spooled.messages)
        CHAT_MESSAGES.labels(source.name, "stored").inc(stored)
        CHAT_MESSAGES.labels(source.name, "duplicate").inc(len(spooled.messages) - stored)
        CHAT_REQUESTS.labels(source.name, "spooled").inc()
        log.info(
            "%s: conversation %s, %d new, %d duplicate",
            source.name, spooled.conversation_id, stored, len(spooled.messages) - stored,
        )  # fmt: skip
        return web.json_response(
            {
                "conversation_id": str(spooled.conversation_id),
                "messages": [
                    {"id": str(m.id), "external_id": m.external_id, "duplicate": m.duplicate}
                    for m in spooled.messages
                ],
            },
            status=201 if spooled.stored_any else 200,
        )

    def _journaled(self, source: Source, call: ChatCall) -> web.Response:
        CHAT_REQUESTS.labels(source.name, "journaled").inc()
        log.info("%s: %d message(s) journaled (database away)", source.name,
                 len(call.message_ids))  # fmt: skip
        # No ids yet: they are decided when the journal is replayed (a message may turn out to
        # be stored already), and an acknowledgement names only ids that will resolve.
        return web.json_response(
            {
                "journaled": True,
                "conversation_external_id": call.conversation_id,
                "messages": [{"external_id": m} for m in call.message_ids],
            },
            status=202,
        )


def parse_call(source: Source, body: bytes, received_at: datetime) -> ChatBatch | Ignored:
    """The call's messages as its source's format reads them (400/422 when it cannot)."""
    return source.format.parse(_json(body), source.name, received_at, trusted=source.trusted)


def call_of(source: Source, body: bytes, received_at: datetime, batch: ChatBatch) -> ChatCall:
    return ChatCall(
        source=source.name,
        raw=body,
        received_at=received_at,
        conversation_id=batch.conversation_id,
        message_ids=[m.external_id for m in batch.messages],
        edits=batch.edits,
    )


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # includes invalid UTF-8
        raise web.HTTPBadRequest(text=f"the body is not valid JSON: {exc}") from None


WEBHOOK_PATH = "/webhooks/chat/{source}"


def openapi_path_item() -> dict[str, object]:
    """The webhook's OpenAPI description (the app that mounts it publishes it)."""
    schema = GenericPayload.model_json_schema(ref_template="{model}")
    schema = _inline(schema, schema.pop("$defs", {}))  # this item stands alone: no refs
    filed = {
        "type": "object",
        "required": ["conversation_id", "messages"],
        "properties": {"conversation_id": {"type": "string"}, "messages": {"type": "array"}},
    }
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    refusals = {
        "400": "Not JSON", "401": "Missing or invalid signature, or a timestamp 5 minutes off",
        "404": "No such source", "413": "Body too large", "422": "Invalid fields",
        "503": "Database away and journal full; retry after Retry-After seconds",
    }  # fmt: skip
    header = {"in": "header", "required": False, "schema": {"type": "string"}}
    return {
        "post": {
            "summary": "Chat messages or a transcript from a configured source (signed)",
            "security": [],
            "parameters": [
                {"name": "source", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "X-Archive-Timestamp", **header},
                {
                    "name": "X-Archive-Signature",
                    **header,
                    "description": (
                        'sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>; '
                        "chatwoot sources send X-Chatwoot-Timestamp / X-Chatwoot-Signature"
                    ),
                },
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "responses": {
                "200": {"description": "All were duplicates", "content": _json_content(filed)},
                "201": {
                    "description": "Spooled (filed shortly after)",
                    "content": _json_content(filed),
                },
                "202": {
                    "description": "Journaled while the database is away (no ids yet), "
                    "or not a message: ignored",
                    "content": _json_content({}),
                },
                **{
                    code: {"description": text, "content": problem}
                    for code, text in refusals.items()
                },
            },
        }
    }


def _json_content(schema: object) -> dict[str, object]:
    return {"application/json": {"schema": schema}}


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    """``node`` with every ``$ref`` replaced by its definition (the models have no cycles)."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(definitions[node["$ref"]], definitions)
        return {k: _inline(v, definitions) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, definitions) for v in node]
    return node

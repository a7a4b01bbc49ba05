"""``POST /webhooks/chat/{source}``: verify, parse with the source's format, file, answer."""

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
from ingest.chat.fetch import FetchPolicy, fetch_attachments
from ingest.chat.formats import ChatFormat, Ignored
from ingest.chat.generic import GENERIC
from ingest.chat.generic import Payload as GenericPayload
from ingest.chat.signature import BadSignature, verify
from store.chat import ChatBatch, ChatFiled
from store.documents import utcnow
from store.errors import is_transient

log = logging.getLogger("archive.chat")

FORMATS: Mapping[str, ChatFormat] = {f.name: f for f in (GENERIC, CHATWOOT)}

CHAT_MESSAGES = Counter(
    "archive_chat_messages_total", "Chat messages received by webhook", ["source", "outcome"]
)  # stored, duplicate
CHAT_REQUESTS = Counter(
    "archive_chat_requests_total", "Chat webhook calls by outcome", ["source", "outcome"]
)  # filed, ignored, unauthorized, invalid, tempfail

FileChat = Callable[[ChatBatch], Awaitable[ChatFiled]]


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
        file_chat: FileChat,
        max_body_bytes: int,
        clock: Callable[[], datetime] = utcnow,
        fetch: FetchPolicy | None = None,
    ) -> None:
        self._sources = sources
        self._file_chat = file_chat
        self._max_body_bytes = max_body_bytes
        self._clock = clock
        self._fetch = fetch or FetchPolicy.of((), max_bytes=max_body_bytes)

    async def handle(self, request: web.Request) -> web.Response:
        source = self._sources.get(request.match_info["source"])
        if source is None:
            raise web.HTTPNotFound(text="no webhook source of that name is configured")
        body = await self._read_body(request)
        now = self._clock()
        self._verify(request, source, body, now)
        try:
            batch = source.format.parse(_json(body), source.name, now, trusted=source.trusted)
        except Exception:
            CHAT_REQUESTS.labels(source.name, "invalid").inc()
            raise
        if isinstance(batch, Ignored):
            CHAT_REQUESTS.labels(source.name, "ignored").inc()
            return web.json_response({"ignored": batch.event}, status=202)
        return await self._file(source, batch)

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
            raise web.HTTPUnauthorized(
                text=f"missing or invalid {headers.signature} / {headers.timestamp}"
            ) from None

    async def _file(self, source: Source, batch: ChatBatch) -> web.Response:
        batch = await fetch_attachments(batch, policy=self._fetch)
        try:
            filed = await self._file_chat(batch)
        except Exception as exc:
            if is_transient(exc):
                CHAT_REQUESTS.labels(source.name, "tempfail").inc()
            raise  # the problem middleware answers 503 + Retry-After for transient failures
        stored = sum(not m.duplicate for m in filed.messages)
        CHAT_MESSAGES.labels(source.name, "stored").inc(stored)
        CHAT_MESSAGES.labels(source.name, "duplicate").inc(len(filed.messages) - stored)
        CHAT_REQUESTS.labels(source.name, "filed").inc()
        log.info(
            "%s: conversation %s, %d stored, %d duplicate",
            source.name, filed.conversation_id, stored, len(filed.messages) - stored,
        )  # fmt: skip
        return web.json_response(
            {
                "conversation_id": str(filed.conversation_id),
                "messages": [
                    {"id": str(m.id), "external_id": m.external_id, "duplicate": m.duplicate}
                    for m in filed.messages
                ],
            },
            status=201 if filed.stored_any else 200,
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
        "503": "Database unavailable; retry after Retry-After seconds",
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
                "201": {"description": "Stored", "content": _json_content(filed)},
                "202": {"description": "Not a message: ignored", "content": _json_content({})},
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

"""``chatwoot backfill``: pull from Chatwoot's API the messages its webhooks did not deliver.

Chatwoot never retries an account webhook: whatever it sent while the archive was down or
unreachable is gone. Its API still has every conversation: the list (25 a page, most recent
activity first) and each conversation's messages (20 at a time, ``before=<id>`` for older
ones). Filed through the same path as webhooks, so a message already archived is a duplicate
and a second run stores nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, ValidationError

from ingest.attachment_text import with_attachment_text
from ingest.chat.chatwoot import ChatwootMessage, Conversation, conversation_batch
from ingest.chat.fetch import FetchPolicy, fetch_attachments
from store.chat import ChatBatch, ChatFiled
from store.chat_spool import with_claimed_ids

log = logging.getLogger("archive.chat")

MESSAGES_PAGE = 20  # MessageFinder: messages_latest and messages_before take 20


class ChatwootApiError(Exception):
    """Chatwoot's API could not be read; the message is one line saying what to check."""


@dataclass(frozen=True)
class ChatwootEndpoint:
    url: str  # Chatwoot's address, without a trailing slash
    account: int
    token: str
    source: str  # for messages: which ARCHIVE_CHATWOOT_API_*_<NAME> to check


class _ApiConversation(Conversation):
    last_activity_at: datetime


class _ConversationPage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    meta: dict[str, Any] = {}
    payload: list[_ApiConversation]


class _ConversationList(BaseModel):
    model_config = ConfigDict(extra="ignore")
    data: _ConversationPage


class _MessageList(BaseModel):
    model_config = ConfigDict(extra="ignore")
    payload: list[ChatwootMessage]


class ChatwootClient:
    """The two reads of Chatwoot's application API that backfill needs."""

    def __init__(self, session: aiohttp.ClientSession, endpoint: ChatwootEndpoint) -> None:
        self._session = session
        self._endpoint = endpoint

    async def conversations(self, page: int) -> tuple[list[_ApiConversation], int | None]:
        """One page of every conversation (any status, any assignee), latest activity first,
        and how many there are in all."""
        params = {"status": "all", "assignee_type": "all", "page": str(page),
                  "sort_by": "last_activity_at_desc"}  # fmt: skip
        listed = _ConversationList.model_validate(await self._get("conversations", params))
        total = listed.data.meta.get("all_count")
        return listed.data.payload, total if isinstance(total, int) else None

    async def messages(self, display_id: int | str, *, before: int | str | None) -> list[
        ChatwootMessage
    ]:  # fmt: skip
        params = {"before": str(before)} if before is not None else {}
        path = f"conversations/{display_id}/messages"
        return _MessageList.model_validate(await self._get(path, params)).payload

    async def _get(self, path: str, params: dict[str, str]) -> Any:
        endpoint = self._endpoint
        url = f"{endpoint.url}/api/v1/accounts/{endpoint.account}/{path}"
        name = endpoint.source.upper().replace("-", "_")
        try:
            async with self._session.get(
                url, params=params, headers={"api_access_token": endpoint.token},
                allow_redirects=False,
            ) as response:  # fmt: skip
                _check(response.status, name)
                return await response.json()
        except aiohttp.ContentTypeError:
            raise ChatwootApiError(
                f"{endpoint.url} did not answer as Chatwoot's API does: "
                f"check ARCHIVE_CHATWOOT_API_URL_{name}"
            ) from None
        except aiohttp.ClientError as exc:
            raise ChatwootApiError(
                f"cannot reach Chatwoot at {endpoint.url} ({type(exc).__name__}): "
                f"check ARCHIVE_CHATWOOT_API_URL_{name}"
            ) from None


def _check(status: int, name: str) -> None:
    if status == 401:
        raise ChatwootApiError(
            f"Chatwoot refused the access token (401): check ARCHIVE_CHATWOOT_API_TOKEN_{name}"
        )
    if status in {403, 404}:
        raise ChatwootApiError(
            f"Chatwoot answered {status} for the account: check ARCHIVE_CHATWOOT_API_ACCOUNT_{name}"
            " and that the token's user is an administrator of it"
        )
    if status != 200:
        raise ChatwootApiError(f"Chatwoot answered HTTP {status}; try again later")


@dataclass
class BackfillReport:
    conversations: int = 0
    messages: int = 0
    stored: int = 0
    not_fetched: int = 0

    @property
    def duplicates(self) -> int:
        return self.messages - self.stored


FileChats = Callable[[Sequence[ChatBatch]], Awaitable[list[ChatFiled]]]


@dataclass(frozen=True)
class Backfill:
    client: ChatwootClient
    source: str
    account: int
    trusted: bool
    fetch: FetchPolicy
    file_chats: FileChats
    clock: Callable[[], datetime]

    async def run(
        self,
        *,
        since: datetime,
        on_total: Callable[[int], object],
        on_conversation: Callable[[], object],
    ) -> BackfillReport:
        """Every conversation active since ``since``: its messages since then, filed."""
        report, page = BackfillReport(), 1
        while True:
            try:
                conversations, total = await self.client.conversations(page)
            except ValidationError as exc:
                raise _unexpected(f"page {page} of the conversations", exc) from None
            if page == 1 and total is not None:
                on_total(total)
            recent = [c for c in conversations if c.last_activity_at >= since]
            for conversation in recent:
                await self._conversation(conversation, since, report)
                on_conversation()
            # Latest activity first: a page with nothing recent ends the list that matters.
            if not recent:
                return report
            page += 1

    async def _conversation(
        self, conversation: _ApiConversation, since: datetime, report: BackfillReport
    ) -> None:
        messages = await self._messages_since(conversation.id, since)
        report.conversations += 1
        if not messages:
            return
        batch = conversation_batch(
            source=self.source, account_id=self.account, conversation=conversation,
            messages=messages, received_at=self.clock(), trusted=self.trusted, edits=True,
        )  # fmt: skip
        [batch] = await with_attachment_text([await fetch_attachments(batch, policy=self.fetch)])
        # Ids a webhook's answer named while the archive was catching up are kept.
        batch = await with_claimed_ids(batch)
        [filed] = await self.file_chats([batch])
        report.messages += len(filed.messages)
        report.stored += sum(not m.duplicate for m in filed.messages)
        report.not_fetched += sum(len(m.unfetched) for m in batch.messages)
        log.info("backfill %s: conversation %s, %d messages, %d stored", self.source,
                 filed.conversation_id, len(filed.messages),
                 sum(not m.duplicate for m in filed.messages))  # fmt: skip

    async def _messages_since(
        self, display_id: int | str, since: datetime
    ) -> list[ChatwootMessage]:
        found: list[ChatwootMessage] = []
        before: int | str | None = None
        while True:
            try:
                page = await self.client.messages(display_id, before=before)
            except ValidationError as exc:
                raise _unexpected(f"conversation {display_id}'s messages", exc) from None
            found = page + found
            oldest = page[0] if page else None
            if len(page) < MESSAGES_PAGE or oldest is None or _sent(oldest) < since:
                break
            before = oldest.id
        # Chatwoot's webhooks never carry activity messages ("assigned to ..."): neither does
        # the backfill, so that both archive the same conversation.
        return [m for m in found if _sent(m) >= since and m.message_type != "activity"]


def _sent(message: ChatwootMessage) -> datetime:
    # The API always says when; a message that did not would be kept rather than skipped.
    return message.created_at or datetime.max.replace(tzinfo=UTC)


def _unexpected(what: str, exc: ValidationError) -> ChatwootApiError:
    error = exc.errors()[0]
    field = ".".join(str(p) for p in error.get("loc", ()))
    return ChatwootApiError(
        f"Chatwoot's answer for {what} is not what its API documents ({field}: {error['msg']})"
    )

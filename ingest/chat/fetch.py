"""Fetching the attachments a chat message names by URL, before it is filed.

Only from the origins the operator listed (``ARCHIVE_WEBHOOK_FETCH_ORIGINS``): a webhook is
signed, but the URLs in it are whatever the helpdesk stored, and the archive must not become
a way to make requests elsewhere. Redirects are followed by hand and only to listed origins
(Chatwoot's ``data_url`` redirects to its storage). Bounded in size and time; a fetch that
fails for a reason that may pass (an HTTP 5xx or 429, no answer in time, a connection that
failed) is tried again a few times with backoff, all attempts within one deadline; one that
still fails, or fails for good (a 4xx, an origin not listed, too large), keeps what is known of
the attachment with the reason. Every link of a batch is fetched at once: a slow server delays
a batch by at most the deadline. One that did not answer is fetched again later, behind the
filing (``ingest.chat.refetch``), for a day by default: its message is filed at once, without
it, and gains it when it comes.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import re
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import aiohttp
from yarl import URL

from store.blobs import NewAttachment
from store.chat import AttachmentLink, ChatBatch, NewChatMessage
from store.documents import FetchRetry, utcnow

log = logging.getLogger("archive.chat")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CONTENT_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+$")


@dataclass(frozen=True)
class FetchPolicy:
    origins: frozenset[str]  # scheme://host[:port], as settings normalise them
    max_bytes: int
    timeout_seconds: float = 30.0  # each attempt
    max_redirects: int = 5
    attempts: int = 3
    backoff_seconds: float = 0.5  # before the second attempt; doubled before each next one
    # One attachment's fetch, all its attempts together: a server that trickles its answer
    # costs this much once, not a timeout per attempt (three 30 s attempts held filing 96 s).
    deadline_seconds: float = 30.0
    # An attachment whose server did not answer is fetched again after this, then after four
    # times as long each time (at most ``retry_most``), until ``retry_for`` after the first try.
    retry_after: timedelta = timedelta(minutes=1)
    retry_most: timedelta = timedelta(hours=6)
    retry_for: timedelta = timedelta(days=1)

    @classmethod
    def of(
        cls, origins: Collection[str], *, max_bytes: int, deadline_seconds: float = 30.0,
        retry_for: timedelta = timedelta(days=1),
    ) -> FetchPolicy:  # fmt: skip
        return cls(origins=frozenset(origins), max_bytes=max_bytes,
                   timeout_seconds=deadline_seconds, deadline_seconds=deadline_seconds,
                   retry_for=retry_for)  # fmt: skip

    def allows(self, url: URL) -> bool:
        return url.absolute and str(url.origin()) in self.origins

    def retry(
        self, url: str, *, attempts: int, now: datetime, first: FetchRetry | None = None
    ) -> FetchRetry | None:
        """When to try ``url`` again after ``attempts`` unanswered tries (None: given up);
        ``first`` is the retry so far, whose end stays."""
        until = first.until if first is not None else now + self.retry_for
        delay = min(self.retry_after * 4 ** (attempts - 1), self.retry_most)
        if now + delay > until:
            return None
        return FetchRetry(url=url, attempts=attempts, next_at=now + delay, until=until)


class NotFetched(Exception):
    """Why an attachment was not fetched (said on the message; no personal data in it)."""


class Unanswered(NotFetched):
    """A failure that may pass: an HTTP 5xx or 429, no answer in time, a failed connection
    (the attachment is fetched again later)."""


async def fetch_attachments(batch: ChatBatch, *, policy: FetchPolicy) -> ChatBatch:
    """``batch`` with every attachment link either fetched (into ``attachments``) or kept as
    metadata with the reason (``unfetched``). Never raises for a fetch that fails."""
    if not any(m.links for m in batch.messages):
        return batch
    async with fetching(policy) as session:  # every link at once: a slow one delays no other
        messages = await asyncio.gather(*(_fetch_message(session, m, policy)
                                          for m in batch.messages))  # fmt: skip
    return replace(batch, messages=list(messages))


@asynccontextmanager
async def fetching(policy: FetchPolicy) -> AsyncIterator[aiohttp.ClientSession]:
    """The HTTP client the fetches of one batch (or one round of fetching again) share."""
    session = aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),  # nothing a server sets is sent anywhere
        timeout=aiohttp.ClientTimeout(total=policy.timeout_seconds),
    )
    async with session:
        yield session


async def _fetch_message(
    session: aiohttp.ClientSession, message: NewChatMessage, policy: FetchPolicy
) -> NewChatMessage:
    if not message.links:
        return message
    fetched, unfetched = list(message.attachments), list(message.unfetched)
    outcomes = await asyncio.gather(*(fetch_link(session, link, policy)
                                      for link in message.links))  # fmt: skip
    for n, (link, outcome) in enumerate(zip(message.links, outcomes, strict=True)):
        if isinstance(outcome, NotFetched):
            retry = (policy.retry(link.url, attempts=1, now=utcnow())
                     if isinstance(outcome, Unanswered) else None)  # fmt: skip
            log.warning("message %s: attachment %d not fetched: %s%s", message.external_id, n,
                        outcome, "; fetched again later" if retry else "")  # fmt: skip
            unfetched.append(link.unfetched(str(outcome), retry))
        else:
            fetched.append(outcome)
    return replace(message, attachments=fetched, unfetched=unfetched, links=())


async def fetch_link(
    session: aiohttp.ClientSession, link: AttachmentLink, policy: FetchPolicy
) -> NewAttachment | NotFetched:
    """The attachment, or why not (``Unanswered`` if it may come later); all attempts
    within the policy's deadline. Never raises for a fetch that fails."""
    try:
        async with asyncio.timeout(policy.deadline_seconds):
            return await _fetch(session, link, policy)
    except TimeoutError:
        return Unanswered(f"not fetched within {policy.deadline_seconds:g}s, all attempts")
    except NotFetched as exc:
        return exc


async def _fetch(
    session: aiohttp.ClientSession, link: AttachmentLink, policy: FetchPolicy
) -> NewAttachment:
    url = URL(link.url)
    if not policy.allows(url):
        raise NotFetched("its origin is not in ARCHIVE_WEBHOOK_FETCH_ORIGINS")
    if link.size is not None and link.size > policy.max_bytes:
        raise NotFetched(f"larger than the {policy.max_bytes} bytes allowed")
    attempt = 1
    while True:
        try:
            return await _fetch_once(session, url, link, policy)
        except Unanswered as exc:
            if attempt >= policy.attempts:
                raise Unanswered(f"{exc} ({attempt} attempts)") from None
            delay = policy.backoff_seconds * 2 ** (attempt - 1)
            log.info("attachment fetch attempt %d of %d failed (%s); again in %gs", attempt,
                     policy.attempts, exc, delay)  # fmt: skip
        await asyncio.sleep(delay)
        attempt += 1


async def _fetch_once(
    session: aiohttp.ClientSession, url: URL, link: AttachmentLink, policy: FetchPolicy
) -> NewAttachment:
    try:
        async with asyncio.timeout(policy.timeout_seconds):
            return await _follow(session, url, link, policy)
    except TimeoutError:
        raise Unanswered(f"no answer within {policy.timeout_seconds:g}s") from None
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        raise Unanswered(f"fetch failed ({type(exc).__name__})") from None
    except aiohttp.ClientError as exc:
        raise NotFetched(f"fetch failed ({type(exc).__name__})") from None


async def _follow(
    session: aiohttp.ClientSession, url: URL, link: AttachmentLink, policy: FetchPolicy
) -> NewAttachment:
    for _ in range(policy.max_redirects + 1):
        async with session.get(url, allow_redirects=False) as response:
            if response.status in _REDIRECTS:
                url = url.join(URL(response.headers.get("Location", "")))
                if not policy.allows(url):
                    raise NotFetched("redirected to an origin not in ARCHIVE_WEBHOOK_FETCH_ORIGINS")
                continue
            if response.status >= 500 or response.status == 429:
                raise Unanswered(f"answered HTTP {response.status}")
            if response.status != 200:
                raise NotFetched(f"answered HTTP {response.status}")
            data = await _read_bounded(response, policy.max_bytes)
            return NewAttachment(
                data=data, filename=link.filename or _disposition_name(response),
                content_type=_content_type(response, link.filename),
            )  # fmt: skip
    raise NotFetched(f"more than {policy.max_redirects} redirects")


async def _read_bounded(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    if response.content_length is not None and response.content_length > max_bytes:
        raise NotFetched(f"larger than the {max_bytes} bytes allowed")
    data = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > max_bytes:
            raise NotFetched(f"larger than the {max_bytes} bytes allowed")
    return bytes(data)


def _content_type(response: aiohttp.ClientResponse, filename: str | None) -> str:
    said = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if _CONTENT_TYPE.match(said) and said != "application/octet-stream":
        return said
    guessed = mimetypes.guess_type(filename or "")[0]
    return guessed or "application/octet-stream"


def _disposition_name(response: aiohttp.ClientResponse) -> str | None:
    disposition = response.content_disposition
    return disposition.filename[:255] if disposition and disposition.filename else None

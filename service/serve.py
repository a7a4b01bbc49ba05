"""The ``serve`` process: database, HTTP, SMTP and scheduler on one event loop, stopped in order."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web

from api.app import create_app
from api.auth import add_route
from api.state import OPENAPI_PATHS, ApiConfig
from ingest.chat.fetch import FetchPolicy, fetch_attachments
from ingest.chat.filing import ChatFiling
from ingest.chat.intake import ChatIntake, replaying
from ingest.chat.refetch import refetching
from ingest.chat.webhook import (
    FORMATS,
    WEBHOOK_PATH,
    ChatWebhook,
    Source,
    openapi_path_item,
)
from ingest.filer import Filer, filing
from ingest.mime import SupportSide
from ingest.parsing import Parsers
from ingest.smtp import ArchiveHandler, networks, smtp_server, tls_context
from retention.rules import RetentionPolicy
from scheduler.jobs import Jobs
from scheduler.runner import scheduler
from search.index import SearchIndex, following
from service.logs import AccessLogger
from service.settings import Environment, Settings
from store import keys, subjects
from store.chat import ChatBatch
from store.chat_spool import ChatSpool
from store.database import Database, UnusableDatabase, open_database
from store.documents import Role
from store.embedded import EmbeddedMongo, running_embedded_uri
from store.errors import Conflict
from store.journal import Journal
from store.spool import Spool
from web.app import add_web

log = logging.getLogger("archive.service")

# How long in-flight requests may take to finish once a shutdown begins.
SHUTDOWN_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class Roles:
    http: bool = True
    smtp: bool = True
    scheduler: bool = True


# While the configured MongoDB does not answer at start, serve tries again this often.
DATABASE_RETRY_SECONDS = 5.0


@asynccontextmanager
async def database_from(
    settings: Settings, *, share: bool = False, stop: asyncio.Event | None = None
) -> AsyncIterator[Database]:
    """The configured MongoDB, or an embedded mongod under ``ARCHIVE_DATA_DIR``.

    With ``share`` (CLI commands), the embedded mongod that a running ``serve`` owns is used,
    never started: a command run where no serve keeps the archive would otherwise read, export
    or write an empty database of its own. Without it (``serve``), a data directory whose
    mongod already answers belongs to another serve.
    """
    async with AsyncExitStack() as stack:
        uri = settings.mongodb_uri
        mongo_dir = settings.data_dir / "mongo"
        if uri is None:
            uri = await running_embedded_uri(mongo_dir)
            if uri is None and share:
                raise NoDatabase(
                    f"no running serve keeps its database in ARCHIVE_DATA_DIR={settings.data_dir}: "
                    "start 'support-archive serve' (with the same ARCHIVE_DATA_DIR or "
                    "ARCHIVE_CONFIG), or set ARCHIVE_MONGODB_URI"
                )
            if uri is not None and not share:
                raise NoDatabase(
                    f"ARCHIVE_DATA_DIR={settings.data_dir} is in use by another serve (its mongod "
                    f"answers on {uri.split('/')[2]}): stop that one, or give this one another "
                    "ARCHIVE_DATA_DIR"
                )
        if uri is None:
            mongo = EmbeddedMongo(mongo_dir, binary=settings.mongod_bin)
            await stack.enter_async_context(mongo)
            uri = mongo.uri
        database = await stack.enter_async_context(
            _first_answer(uri, settings, wait=not share and settings.mongodb_uri is not None,
                          stop=stop)
        )  # fmt: skip
        # Late mail of a purged customer is recognised by its addresses' keyed hashes.
        subjects.use_key(settings.resolved_secret_key)
        yield database


@asynccontextmanager
async def _first_answer(
    uri: str, settings: Settings, *, wait: bool, stop: asyncio.Event | None
) -> AsyncIterator[Database]:
    """The database at ``uri``; with ``wait`` (serve on a configured MongoDB), one that does
    not answer yet is asked again until it does (a service started before its database, or
    restarted while it is away, then replays its webhook journal) or ``stop`` is set."""
    async with AsyncExitStack() as stack:
        while True:
            try:
                opened = open_database(uri, name=settings.db_name, timeout=settings.db_timeout)
                database = await stack.enter_async_context(opened)
                break
            except UnusableDatabase as exc:
                if not (wait and exc.unreachable):
                    raise
            log.warning("MongoDB does not answer (ARCHIVE_MONGODB_URI); trying again every "
                        "%.0fs", DATABASE_RETRY_SECONDS)  # fmt: skip
            if stop is None:
                await asyncio.sleep(DATABASE_RETRY_SECONDS)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), DATABASE_RETRY_SECONDS)
            if stop.is_set():
                raise NoDatabase("stopped while waiting for MongoDB to answer")
        yield database


class NoDatabase(Exception):
    """No database to use, or the data directory is another serve's (the message says what to
    do)."""


def webhook_sources(settings: Settings) -> dict[str, Source]:
    return {
        s.name: Source(name=s.name, format=FORMATS[s.format.value], secret=s.secret,
                       trusted=s.trusted)
        for s in settings.webhook_source_specs()
    }  # fmt: skip


def fetch_policy(settings: Settings) -> FetchPolicy:
    """Attachments named by URL: from the listed origins, each no larger than a mail, each
    fetched within ARCHIVE_WEBHOOK_FETCH_TIMEOUT, all its attempts together, and again later
    for ARCHIVE_WEBHOOK_REFETCH_FOR if its server did not answer."""
    return FetchPolicy.of(
        settings.webhook_fetch_origins,
        max_bytes=settings.smtp_max_message_bytes,
        deadline_seconds=settings.webhook_fetch_timeout.total_seconds(),
        retry_for=settings.webhook_refetch_for,
    )


@dataclass(frozen=True)
class Ingest:
    """What SMTP and the chat webhooks share: the spool and its filer, and the webhook
    journal with the intake that chooses between the two."""

    spool: Spool
    filer: Filer
    journal: Journal
    intake: ChatIntake
    # Fetching again the chat attachments whose server did not answer in time (None: no
    # fetch origins are configured, so nothing is ever fetched).
    refetch: Callable[[], Coroutine[Any, Any, None]] | None = None


# The app's ingest (declared here, not in api.state: the API does not know ingest).
INGEST = web.AppKey("ingest", Ingest)


def make_ingest(settings: Settings) -> Ingest:
    sources = webhook_sources(settings)
    spool = Spool()
    # Attachments named by URL (Chatwoot's data_url) are fetched behind the acknowledgement,
    # on each group of chat batches before they are filed: a slow file server never delays
    # the answer Chatwoot waits 5 s for.
    policy = fetch_policy(settings)

    async def fetched(batches: list[ChatBatch]) -> list[ChatBatch]:
        return list(await asyncio.gather(*(fetch_attachments(b, policy=policy) for b in batches)))

    # Parsing and text extraction run in these processes, never on serve's loop.
    parsers = Parsers(settings.parse_workers, budget=settings.parse_budget.total_seconds())
    chat = ChatFiling(sources=sources, prepare=fetched, extract=parsers.attachment_texts)
    filer = Filer(spool, support=SupportSide.parse(settings.support_addresses), chat=chat,
                  parsers=parsers)  # fmt: skip
    journal = Journal(settings.data_dir, max_bytes=settings.journal_max_bytes)
    intake = ChatIntake(spool=ChatSpool(spool), journal=journal, sources=sources)
    # What did not come within the deadline is fetched again behind the filing.
    refetch = partial(refetching, policy, extract=parsers.attachment_texts)
    return Ingest(spool=spool, filer=filer, journal=journal, intake=intake,
                  refetch=refetch if policy.origins else None)  # fmt: skip


@asynccontextmanager
async def ingesting(ingest: Ingest, database: Database) -> AsyncIterator[None]:
    """The filer, the journal replay (at once, then whenever calls were journaled and the
    database answers) and the fetching again of attachments, in the background. On exit, the
    replay stops (what is left stays journaled for the next start), so do the fetches (they
    are tried again at the next start), and the filer files what was accepted."""
    async with filing(ingest.filer, ingest.spool, shutdown_grace=SHUTDOWN_GRACE_SECONDS):
        tasks = [asyncio.create_task(replaying(ingest.intake, ingest.journal, database),
                                     name="journal-replay")]  # fmt: skip
        if ingest.refetch is not None:
            tasks.append(asyncio.create_task(ingest.refetch(), name="attachment-refetch"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            ingest.journal.close()


def build_app(
    settings: Settings,
    database: Database,
    *,
    ingest: Ingest | None = None,
    index: SearchIndex | None = None,
) -> web.Application:
    """The API, plus the chat webhooks (ingest) on the same app and port.

    Without ``ingest`` (tests of the app alone) the app runs its own spool, filer and journal
    replay while it runs; ``serve`` passes the ones it shares with SMTP.
    """
    config = ApiConfig(
        max_body_bytes=settings.webhook_max_body_bytes,
        audit_max_age=settings.audit_max_age,
        retention=retention_policy(settings),
        export_dir=export_dir(settings),
        search_dir=search_dir(settings),
        export_max_age=settings.export_max_age,
    )
    app = create_app(database=database, config=config, index=index)
    if ingest is None:
        own = ingest = make_ingest(settings)
        app.cleanup_ctx.append(lambda _: ingesting(own, database))
    app[INGEST] = ingest
    webhook = ChatWebhook(
        sources=webhook_sources(settings),
        accept=ingest.intake.accept,
        max_body_bytes=settings.webhook_max_body_bytes,
    )
    add_route(
        app, "POST", WEBHOOK_PATH, webhook.handle,
        public_because="signed by its source (HMAC of timestamp and body), checked by ingest",
    )  # fmt: skip
    app[OPENAPI_PATHS][WEBHOOK_PATH] = openapi_path_item()
    add_web(app)  # the web interface, at /
    return app


@asynccontextmanager
async def http_server(app: web.Application, *, host: str, port: int) -> AsyncIterator[str]:
    """Serve ``app``; on exit stop accepting, then let in-flight requests finish."""
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=logging.getLogger("archive.http"),
        access_log_class=AccessLogger,  # no query strings: they carry search text, addresses
        shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    url = site.name
    log.info("HTTP API listening on %s", url)
    try:
        yield url
    finally:
        await runner.cleanup()
        log.info("HTTP API stopped")


def search_dir(settings: Settings) -> Path:
    """Where this process keeps its search index (one folder per database)."""
    return settings.data_dir / "search"


def export_dir(settings: Settings) -> Path:
    """Where exports are written (and their temporary files): only the owner may enter it."""
    return settings.data_dir / "exports"


def retention_policy(settings: Settings) -> RetentionPolicy:
    return RetentionPolicy(
        grace=settings.retention_grace,
        max_age=settings.retention_max_age,
        secret_key=settings.resolved_secret_key(),
        blob_quiet_period=settings.blob_quiet_period,
        data_dir=settings.data_dir,
        audit_text_max_age=settings.audit_text_max_age,
    )


async def first_admin_key(settings: Settings) -> None:
    """On a first start there is no key at all: make an admin key so the API can be used.

    In development its token goes to the terminal (never to the logs); in production keys are
    made deliberately, with ``support-archive keys create``.
    """
    if await keys.any_key_exists():
        return
    if settings.env is not Environment.DEVELOPMENT:
        log.warning("no API key exists: create one with 'support-archive keys create'")
        return
    try:
        _, token = await keys.create_key(name="admin", role=Role.ADMIN)
    except Conflict:  # another process made it a moment ago
        return
    base = f"http://{settings.http_host}:{settings.http_port}"
    print(
        "\nFirst start: an admin API key was created. Its token, shown only this once:\n"
        f"\n    {token}\n\ntry: curl -H 'Authorization: Bearer {token}' {base}/api/v1/audit\n",
        flush=True,
    )


class PortBusy(Exception):
    """A port serve is to listen on cannot be had; the message says which and what to do."""


@contextlib.contextmanager
def _port(variable: str, host: str, port: int) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortBusy(f"port {port} on {host} is in use by another program: stop it, "
                           f"or set {variable} to a free port") from None  # fmt: skip
        if exc.errno in {errno.EACCES, errno.EADDRNOTAVAIL}:
            raise PortBusy(f"cannot listen on {host}:{port} ({exc.strerror}): check {variable} "
                           f"and {variable.replace('PORT', 'HOST')}") from None  # fmt: skip
        raise


def smtp_handler(settings: Settings, spool: Spool) -> ArchiveHandler:
    return ArchiveHandler(spool=spool, allowed_clients=networks(settings.smtp_allowed_clients),
                          max_recipients=settings.smtp_max_recipients)  # fmt: skip


async def serve(settings: Settings, roles: Roles, *, stop: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or ``stop``), then stop accepting, finish writes, close."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with AsyncExitStack() as stack:
            database = await stack.enter_async_context(database_from(settings, stop=stop))
            if roles.http or roles.smtp:
                # The filer and the journal replay stop after HTTP and SMTP (exit order is
                # reversed): what they accepted while closing is filed before the process ends.
                ingest = make_ingest(settings)
                await stack.enter_async_context(ingesting(ingest, database))
            index = None
            if roles.http:
                # The index follows MongoDB from before HTTP answers until after it stops.
                index = await stack.enter_async_context(
                    following(
                        SearchIndex(
                            search_dir(settings),
                            settings.db_name,
                            compact_every=settings.purge_interval.total_seconds(),
                        )
                    )
                )
                app = build_app(settings, database, ingest=ingest, index=index)
                with _port("ARCHIVE_HTTP_PORT", settings.http_host, settings.http_port):
                    await stack.enter_async_context(
                        http_server(app, host=settings.http_host, port=settings.http_port)
                    )
            if roles.smtp:
                tls = None
                if settings.smtp_tls_cert and settings.smtp_tls_key:
                    tls = tls_context(str(settings.smtp_tls_cert), str(settings.smtp_tls_key))
                with _port("ARCHIVE_SMTP_PORT", settings.smtp_host, settings.smtp_port):
                    await stack.enter_async_context(smtp_server(
                        smtp_handler(settings, ingest.spool),
                        host=settings.smtp_host,
                        port=settings.smtp_port,
                        max_message_bytes=settings.smtp_max_message_bytes,
                        tls=tls,
                        idle_timeout=settings.smtp_idle_timeout.total_seconds(),
                        max_per_client=settings.smtp_max_connections_per_client,
                        max_per_network=settings.smtp_max_connections_per_network,
                        max_connections=settings.smtp_max_connections,
                        shutdown_grace=SHUTDOWN_GRACE_SECONDS,
                    ))  # fmt: skip
            if roles.scheduler:
                jobs = Jobs(database=database, policy=retention_policy(settings),
                            interval=settings.purge_interval, index=index)  # fmt: skip
                await stack.enter_async_context(scheduler(jobs))
            # Only once the ports are ours: a start that fails prints no token it then loses.
            await first_admin_key(settings)
            log.info("ready; press Ctrl-C to stop")
            await stop.wait()
            log.info("shutting down: no new connections, finishing what is in flight")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    log.info("stopped")

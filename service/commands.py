"""The bodies of the one-shot CLI commands (everything but ``serve``)."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from getpass import getuser
from mailbox import Mailbox, Message
from pathlib import Path

import aiohttp
from beanie import PydanticObjectId
from tqdm import tqdm

import retention.forecast
import retention.records
import retention.sweep
from exports.builder import (
    FILING_WAIT,
    Scope,
    count_messages,
    export_to_file,
    filed_up_to,
    register_disclosure,
    scope_of_hold,
    start_export,
)
from ingest.chat.backfill import Backfill, BackfillReport, ChatwootClient, ChatwootEndpoint
from ingest.mailbox import ImportReport, MailboxKind, import_messages, open_mailbox, raw_messages
from ingest.mime import SupportSide
from ingest.parsing import Parsers
from retention.residue import Residue
from scheduler.jobs import Jobs
from search.index import REBUILD_REQUEST, IndexBusy, SearchIndex, rebuild_here
from service.serve import database_from, export_dir, fetch_policy, retention_policy, search_dir
from service.settings import Settings, WebhookSource
from store import accounts, audit, keys
from store.accounts import PersonErasure
from store.chat import file_chats
from store.documents import Account, ApiKey, Export, PurgeRecord, Role, utcnow
from store.documents import Message as StoredMessage
from store.errors import NotFound
from store.messages import file_emails


def actor() -> str:
    """Who did it, in the audit trail: the operator's login on this machine."""
    return f"cli:{getuser()}"


async def _audited(settings: Settings, action: str, *, target: dict[str, str]) -> None:
    await audit.record(actor=actor(), role=None, action=action, target=target,
                       max_age=settings.audit_max_age)  # fmt: skip


# What to do about a NotFound, added by the command line to what the store says is missing.
LIST_ACCOUNTS = "GET /api/v1/accounts lists the accounts"
LIST_HOLDS = "GET /api/v1/holds lists the holds"
LIST_KEYS = "'support-archive keys list' shows them"


@contextmanager
def _next_step(hint: str) -> Iterator[None]:
    try:
        yield
    except NotFound as exc:
        raise NotFound(f"{exc}: {hint}") from exc


# serve files mail with the support addresses it is configured with; an import run without
# them would file every agent's reply as a customer's, and nothing would look wrong.
NO_SUPPORT_ADDRESSES = (
    "ARCHIVE_SUPPORT_ADDRESSES is not set, so agents' replies will be filed as inbound mail "
    "from customers; set it as serve has it (in the ARCHIVE_CONFIG file both read, or in the "
    "environment) and import again if that matters"
)


async def import_mailbox(
    settings: Settings,
    *,
    kind: MailboxKind,
    path: Path,
    account_id: str | None,
    create_account: bool = False,
    warn: Callable[[str], object],
) -> ImportReport:
    """Import ``path``; ``warn`` hears what the operator should know before it starts."""
    with closing(open_mailbox(kind, path)) as box:
        return await _import_box(settings, box, path=path, account_id=account_id,
                                 create_account=create_account, warn=warn)  # fmt: skip


async def _import_box(
    settings: Settings,
    box: Mailbox[Message],
    *,
    path: Path,
    account_id: str | None,
    create_account: bool,
    warn: Callable[[str], object],
) -> ImportReport:
    async with database_from(settings, share=True):
        if account_id is not None and not create_account and await Account.get(account_id) is None:
            # A typo would otherwise file a whole mailbox under an account nobody has.
            raise NotFound(
                f"no account {account_id!r}: check the id ({LIST_ACCOUNTS}), or add "
                "--create-account to import into a new account"
            )
        if not settings.support_addresses:
            warn(NO_SUPPORT_ADDRESSES)
        await _audited(settings, "mailbox.import", target={"account_id": account_id or ""})
        with tqdm(total=len(box), unit="msg", desc=f"importing {path.name}") as bar:
            parsers = Parsers(settings.parse_workers, budget=settings.parse_budget.total_seconds())
            try:
                report = await import_messages(
                    raw_messages(box),
                    file_emails=file_emails,
                    support=SupportSide.parse(settings.support_addresses),
                    account_id=account_id,
                    on_progress=bar.update,
                    parsers=parsers,
                )
            finally:
                parsers.close()
    return report


async def create_key(settings: Settings, *, name: str, role: Role) -> tuple[ApiKey, str]:
    async with database_from(settings, share=True):
        key, token = await keys.create_key(name=name, role=role)
        await _audited(settings, "key.create", target={"key": name, "role": role.value})
        return key, token


async def list_keys(settings: Settings) -> list[ApiKey]:
    async with database_from(settings, share=True):
        return await keys.list_keys()


async def revoke_key(settings: Settings, *, name: str) -> ApiKey:
    async with database_from(settings, share=True):
        with _next_step(LIST_KEYS):
            key = await keys.revoke_key(name=name)
        await _audited(settings, "key.revoke", target={"key": name})
        return key


async def forecast(settings: Settings) -> list[retention.forecast.ForecastItem]:
    async with database_from(settings, share=True):
        await _audited(settings, "retention.forecast", target={})
        return await retention.forecast.forecast(now=utcnow(), policy=retention_policy(settings))


# How often ``purge`` looks again whether the sweep running elsewhere has finished.
LEASE_POLL_SECONDS = 0.2


async def sweep_once(settings: Settings) -> retention.sweep.SweepReport | None:
    """One sweep now, under the same lease as ``serve``'s scheduler. While another process
    sweeps, wait for it to finish (the progress line says so), for as long as its lease lasts
    without renewal (None: that sweep is still running then)."""
    async with database_from(settings, share=True) as database:
        holder = f"cli-{uuid.uuid4().hex[:12]}"
        jobs = Jobs(database=database, policy=retention_policy(settings),
                    interval=settings.purge_interval, holder=holder)  # fmt: skip
        deadline = asyncio.get_running_loop().time() + jobs.ttl.total_seconds()
        with tqdm(unit="batch", desc="purging", leave=False) as bar:
            while (report := await jobs.purge_sweep(on_batch=bar.update)) is None:
                if asyncio.get_running_loop().time() > deadline:
                    return None
                bar.set_description("waiting for the sweep running in another process")
                await asyncio.sleep(LEASE_POLL_SECONDS)
        await _audited(settings, "purge.sweep", target={
            "messages": str(report.messages), "accounts": str(report.accounts_purged)})  # fmt: skip
        return report


@dataclass(frozen=True)
class Reindexed:
    messages: int
    by_serve: bool  # the running serve rebuilt its own index (else this command did)


async def reindex(
    settings: Settings, *, progress: Callable[[int, int], None], waiting: Callable[[], None]
) -> Reindexed:
    """Rebuild the search index from MongoDB. A running serve keeps (and writes) its own: it
    is asked to rebuild, and this waits until it has; otherwise the index is rebuilt here."""
    async with database_from(settings, share=True) as database:
        index = SearchIndex(search_dir(settings), database.db.name)
        try:
            messages = await rebuild_here(index, progress=progress)
            by_serve = False
        except IndexBusy:
            request = index.path / REBUILD_REQUEST
            request.touch()
            while request.exists():
                waiting()
                await asyncio.sleep(0.5)
            messages = await StoredMessage.get_pymongo_collection().estimated_document_count()
            by_serve = True
        await _audited(settings, "search.reindex", target={"messages": str(messages)})
        return Reindexed(messages, by_serve)


async def export(
    settings: Settings,
    *,
    out: Path,
    account_id: str | None,
    hold_id: str | None,
    authority: str | None,
    legal_basis: str | None,
) -> Export:
    """The same zip as the API's, built in the exports directory under its record's id and
    then moved to ``out``, with a progress bar; a disclosure (by hold) is entered in the
    register like one made through the API. Interrupted (Ctrl-C, SIGTERM) or failed, it leaves
    no file behind."""
    now = utcnow()
    who = actor()
    async with database_from(settings, share=True), _cancelled_by_sigterm():
        hold = None
        if hold_id is not None:
            with _next_step(f"check the id; {LIST_HOLDS}"):
                hold, scope = await scope_of_hold(PydanticObjectId(hold_id))
        else:
            scope = Scope(account_id=account_id)
        with _next_step(f"check the id; {LIST_ACCOUNTS}"):
            record = await start_export(
                scope=scope, account_id=account_id, hold_id=hold.id if hold else None,
                created_by=who, now=now, max_age=settings.export_max_age,
                directory=export_dir(settings),
            )  # fmt: skip
        if hold is not None:
            assert authority and legal_basis
            await register_disclosure(
                export=record, hold=hold, authority=authority, legal_basis=legal_basis,
                disclosed_by=who, now=now,
            )  # fmt: skip
        await _audited(settings, "export.create", target={
            "export_id": str(record.id), "account_id": scope.account_id or "",
            **({"hold_id": str(hold.id)} if hold else {}),
        })  # fmt: skip
        # What was acknowledged before is filed first (export_to_file waits for it too), so
        # that the bar counts what the export will hold.
        await filed_up_to(now, within=FILING_WAIT, on_waiting=lambda: print(
            "waiting for the deliveries acknowledged before the export to be filed...",
            file=sys.stderr))  # fmt: skip
        total = await count_messages(scope)
        with tqdm(total=total, unit="msg", desc="exporting") as bar:
            return await export_to_file(
                record, scope, out=out, directory=export_dir(settings), now=now,
                on_message=bar.update,
            )  # fmt: skip


class BadSource(Exception):
    """``--source`` does not name a chatwoot source with its API configured (says what to do)."""


def chatwoot_endpoint(settings: Settings, source: str) -> tuple[ChatwootEndpoint, bool]:
    """The Chatwoot API of ``source`` and whether the source is trusted, or ``BadSource``."""
    spec = next((s for s in settings.webhook_source_specs() if s.name == source), None)
    if spec is None or spec.format is not WebhookSource.CHATWOOT:
        raise BadSource(f"no chatwoot source named {source!r} in ARCHIVE_WEBHOOK_SOURCES")
    api = settings.chatwoot_api_of(source)
    if api is None:
        name = source.upper().replace("-", "_")
        raise BadSource(
            f"source {source!r} has no Chatwoot API configured: set ARCHIVE_CHATWOOT_API_URL_{name}"
            f", ARCHIVE_CHATWOOT_API_ACCOUNT_{name} and ARCHIVE_CHATWOOT_API_TOKEN_{name}"
        )
    return ChatwootEndpoint(api.url, api.account, api.token, source), spec.trusted


async def chatwoot_backfill(settings: Settings, *, source: str, since: datetime) -> BackfillReport:
    """File what Chatwoot has of ``source`` since ``since`` and the archive does not, with a
    progress bar over the conversations."""
    endpoint, trusted = chatwoot_endpoint(settings, source)
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        database_from(settings, share=True),
    ):
        backfill = Backfill(
            client=ChatwootClient(session, endpoint), source=source, account=endpoint.account,
            trusted=trusted, fetch=fetch_policy(settings), file_chats=file_chats, clock=utcnow,
        )  # fmt: skip
        with tqdm(unit="conversation", desc=f"backfilling {source}") as bar:
            report = await backfill.run(
                since=since, on_total=lambda n: setattr(bar, "total", n),
                on_conversation=bar.update,
            )  # fmt: skip
            bar.total = bar.n  # the list goes on past the window: what was read is all
            bar.refresh()
    return report


@asynccontextmanager
async def _cancelled_by_sigterm() -> AsyncIterator[None]:
    """SIGTERM stops the command as Ctrl-C does (the task is cancelled, so clean-up runs);
    by default it would end the process on the spot."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


@dataclass(frozen=True)
class PurgeCheck:
    """What ``verify-purge`` found: the deletion certificate."""

    records: list[PurgeRecord]
    residue: Residue
    known: bool  # whether the archive has the account (a purged one stays, as a tombstone)


async def erase_person(settings: Settings, *, emails: list[str], names: list[str]) -> PersonErasure:
    """``POST /api/v1/erasures`` from the command line, audited by the ids it set due."""
    async with database_from(settings, share=True):
        erasure = await accounts.erase_person(emails=emails, names=names, now=utcnow())
        await _audited(settings, "erasure.person", target={"account_id": erasure.person})
    return erasure


async def verify_purge(
    settings: Settings, *, account_id: str, emails: list[str], names: list[str]
) -> PurgeCheck:
    """The account's purge records and a residue scan run now. An id the archive never had
    would scan clean whatever remains of the customer: refused, unless addresses or names are
    given to scan for (what they find is real, whatever the id)."""
    async with database_from(settings, share=True):
        known = await Account.get(account_id) is not None
        if not known and not (emails or names):
            raise NotFound(
                f"no account {account_id!r} in the archive (a purged account keeps its id): "
                f"check the id ({LIST_ACCOUNTS}), or give --email or --name to scan for "
                "those alone"
            )
        policy = retention_policy(settings)  # after: it may write the development key
        await _audited(settings, "purge_records.read", target={"account_id": account_id})
        records = await retention.records.purge_records(
            secret_key=policy.secret_key, account_id=account_id
        )
        residue = await retention.records.verify_purge(
            account_id=account_id, emails=emails, names=names, now=utcnow(), policy=policy
        )
    return PurgeCheck(records=records, residue=residue, known=known)

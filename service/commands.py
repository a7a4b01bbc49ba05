"""The bodies of the one-shot CLI commands (everything but ``serve``)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from datetime import datetime
from getpass import getuser
from mailbox import Mailbox, Message
from pathlib import Path

import aiohttp
from beanie import PydanticObjectId
from tqdm import tqdm

from ingest.chat.backfill import Backfill, BackfillReport, ChatwootClient, ChatwootEndpoint
from ingest.mailbox import ImportReport, MailboxKind, import_messages, open_mailbox, raw_messages
from ingest.mime import SupportSide
from scheduler.jobs import Jobs
from service.serve import database_from, export_dir, fetch_policy, retention_policy
from service.settings import Settings, WebhookSource
from store import exports, keys, retention
from store.chat import file_chats
from store.documents import ApiKey, Export, PurgeRecord, Role, utcnow
from store.messages import file_email
from store.residue import Residue


async def import_mailbox(
    settings: Settings, *, kind: MailboxKind, path: Path, account_id: str | None
) -> ImportReport:
    with closing(open_mailbox(kind, path)) as box:
        return await _import_box(settings, box, path=path, account_id=account_id)


async def _import_box(
    settings: Settings, box: Mailbox[Message], *, path: Path, account_id: str | None
) -> ImportReport:
    async with database_from(settings, share=True):
        with tqdm(total=len(box), unit="msg", desc=f"importing {path.name}") as bar:
            report = await import_messages(
                raw_messages(box),
                file_email=file_email,
                support=SupportSide.parse(settings.support_addresses),
                account_id=account_id,
                on_progress=bar.update,
            )
    return report


async def create_key(settings: Settings, *, name: str, role: Role) -> tuple[ApiKey, str]:
    async with database_from(settings, share=True):
        return await keys.create_key(name=name, role=role)


async def list_keys(settings: Settings) -> list[ApiKey]:
    async with database_from(settings, share=True):
        return await keys.list_keys()


async def revoke_key(settings: Settings, *, name: str) -> ApiKey:
    async with database_from(settings, share=True):
        return await keys.revoke_key(name=name)


async def forecast(settings: Settings) -> list[retention.ForecastItem]:
    async with database_from(settings, share=True):
        return await retention.forecast(now=utcnow(), policy=retention_policy(settings))


async def sweep_once(settings: Settings) -> retention.SweepReport | None:
    """One sweep now, under the same lease as ``serve``'s scheduler (None: another holds it)."""
    async with database_from(settings, share=True) as database:
        jobs = Jobs(database=database, policy=retention_policy(settings),
                    interval=settings.purge_interval, holder="cli")  # fmt: skip
        try:
            return await jobs.purge_sweep()
        finally:
            await jobs.stop()


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
    who = f"cli:{getuser()}"
    async with database_from(settings, share=True), _cancelled_by_sigterm():
        hold = None
        if hold_id is not None:
            hold, scope = await exports.scope_of_hold(PydanticObjectId(hold_id))
        else:
            scope = exports.Scope(account_id=account_id)
        record = await exports.start_export(
            scope=scope, account_id=account_id, hold_id=hold.id if hold else None,
            created_by=who, now=now, max_age=settings.export_max_age,
            directory=export_dir(settings),
        )  # fmt: skip
        if hold is not None:
            assert authority and legal_basis
            await exports.register_disclosure(
                export=record, hold=hold, authority=authority, legal_basis=legal_basis,
                disclosed_by=who, now=now,
            )  # fmt: skip
        total = await exports.count_messages(scope)
        with tqdm(total=total, unit="msg", desc="exporting") as bar:
            return await exports.export_to_file(
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


async def verify_purge(
    settings: Settings, *, account_id: str, emails: list[str], names: list[str]
) -> tuple[list[PurgeRecord], Residue]:
    """The account's purge records and a residue scan run now: the deletion certificate."""
    policy = retention_policy(settings)
    async with database_from(settings, share=True):
        records = await retention.purge_records(secret_key=policy.secret_key, account_id=account_id)
        residue = await retention.verify_purge(
            account_id=account_id, emails=emails, names=names, now=utcnow(), policy=policy
        )
    return records, residue

"""The bodies of the one-shot CLI commands (everything but ``serve``)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from getpass import getuser
from mailbox import Mailbox, Message
from pathlib import Path

from beanie import PydanticObjectId
from tqdm import tqdm

from ingest.mailbox import ImportReport, MailboxKind, import_messages, open_mailbox, raw_messages
from ingest.mime import SupportSide
from scheduler.jobs import Jobs
from service.serve import database_from, export_dir, retention_policy
from service.settings import Settings
from store import exports, keys, retention
from store.documents import ApiKey, Export, Role, utcnow
from store.messages import file_email


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

"""Exports: a customer's data (subject access), or a hold's scope for an authority."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from datetime import datetime
from typing import Annotated

from aiohttp import web
from beanie import PydanticObjectId
from pydantic import BaseModel, Field

from api import params
from api.auth import principal_of
from api.state import CONFIG, TASKS
from api.trail import audited
from exports import builder
from store.accounts import account_summary
from store.documents import Disclosure, Export, ExportStatus, iso, utcnow
from store.errors import Conflict

log = logging.getLogger("archive.export")

# How long a cancelled export may take to remove its files and mark itself failed before it
# is asked again (a cancellation can be lost in a database call on Python 3.11).
EXPORT_STOP_SECONDS = 5.0

Text = Annotated[str, Field(min_length=1, max_length=500)]


class ExportBody(params.BodyModel):
    account_id: params.AccountId | None = None
    hold_id: params.ObjectIdText | None = None
    authority: Text | None = None
    legal_basis: Text | None = None


async def create_export(request: web.Request) -> web.Response:
    """Start an export (202); poll ``GET /api/v1/exports/{id}`` until it is ready."""
    body = await params.body(request, ExportBody)
    who = principal_of(request).key_name
    if (body.account_id is None) == (body.hold_id is None):
        raise params.field_error("account_id", "give account_id or hold_id (one)")
    if body.hold_id is not None and not (body.authority and body.legal_basis):
        raise params.field_error("authority", "a disclosure names the authority and legal basis")
    export = await begin_export(request, who=who, account_id=body.account_id,
                                hold_id=body.hold_id, authority=body.authority,
                                legal_basis=body.legal_basis)  # fmt: skip
    return web.json_response(_view(export), status=202)


async def begin_export(
    request: web.Request,
    *,
    who: str,
    account_id: str | None,
    hold_id: str | None,
    authority: str | None,
    legal_basis: str | None,
) -> Export:
    """Start an export of an account (subject access) or of a hold's scope (a disclosure to
    an authority, entered in the register), audited, built in the background. The API and
    the web interface both start theirs here."""
    now = utcnow()
    config = request.app[CONFIG]
    hold = None
    if hold_id is not None:
        hold, scope = await builder.scope_of_hold(PydanticObjectId(hold_id))
    else:
        assert account_id is not None
        await account_summary(account_id=account_id, now=now)  # NotFound when unknown
        scope = builder.Scope(account_id=account_id)
    export = await builder.start_export(
        scope=scope, account_id=account_id, hold_id=hold.id if hold else None,
        created_by=who, now=now, max_age=config.export_max_age, directory=config.export_dir,
    )  # fmt: skip
    target = {"export_id": str(export.id), "account_id": scope.account_id or ""}
    if hold is not None:
        assert authority and legal_basis
        await builder.register_disclosure(export=export, hold=hold, authority=authority,
                                          legal_basis=legal_basis, disclosed_by=who,
                                          now=now)  # fmt: skip
        target["hold_id"] = str(hold.id)
    await audited(request, "export.create", target=target)
    _in_background(request.app, builder.build_export(export, scope, directory=config.export_dir,
                                                     now=now))  # fmt: skip
    return export


def _in_background(app: web.Application, work: Coroutine[object, object, object]) -> None:
    task: asyncio.Task[object] = asyncio.create_task(work)
    app[TASKS].add(task)
    task.add_done_callback(app[TASKS].discard)


async def get_export(request: web.Request) -> web.Response:
    export = await builder.get_export(params.object_id(request, "export_id", what="export"))
    return web.json_response(_view(export))


async def download_export(request: web.Request) -> web.StreamResponse:
    export = await builder.get_export(params.object_id(request, "export_id", what="export"))
    if export.status is not ExportStatus.READY or export.path is None:
        raise Conflict(f"export {export.id} is {export.status.value}, not ready")
    target = {"export_id": str(export.id), "account_id": export.account_id or ""}
    await audited(request, "export.download", target=target)
    return web.FileResponse(
        export.path,
        headers={
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="support-archive-{export.id}.zip"',
            "X-Manifest-SHA256": export.manifest_sha256 or "",
        },
    )


class ExportsParams(params.QueryModel):
    account_id: params.AccountId | None = None
    limit: params.Limit = params.DEFAULT_LIMIT
    cursor: Annotated[str, Field(max_length=200)] | None = None


class ExportCursor(BaseModel):
    t: datetime
    i: params.ObjectIdText


async def list_exports(request: web.Request) -> web.Response:
    """The exports not yet expired, newest first (of one account, with ``account_id``)."""
    p = params.query(request, ExportsParams)
    after = None
    if p.cursor:
        cursor = params.decode_cursor(p.cursor, ExportCursor)
        after = (cursor.t, PydanticObjectId(cursor.i))
    await audited(request, "export.list", target={"account_id": p.account_id or ""})
    page = await builder.list_exports(account_id=p.account_id, limit=p.limit, after=after)
    return web.json_response({
        "exports": [_view(e) for e in page.items],
        "next_cursor": params.page_cursor(page.next_key),
    })  # fmt: skip


class DisclosureParams(params.QueryModel):
    limit: params.Limit = params.DEFAULT_LIMIT


async def list_disclosures(request: web.Request) -> web.Response:
    p = params.query(request, DisclosureParams)
    await audited(request, "disclosure.list")
    found = await Disclosure.find().sort("-disclosed_at").limit(p.limit).to_list()
    return web.json_response({"disclosures": [
        {"id": str(d.id), "export_id": str(d.export_id), "hold_id": str(d.hold_id),
         "case_ref": d.case_ref, "authority": d.authority, "legal_basis": d.legal_basis,
         "disclosed_by": d.disclosed_by, "disclosed_at": iso(d.disclosed_at),
         "manifest_sha256": d.manifest_sha256}
        for d in found
    ]})  # fmt: skip


def _view(export: Export) -> dict[str, object]:
    return {
        "id": str(export.id),
        "status": export.status.value,
        "account_id": export.account_id,
        "hold_id": str(export.hold_id) if export.hold_id else None,
        "size": export.size,
        "manifest_sha256": export.manifest_sha256,
        "created_at": iso(export.created_at),
        "expires_at": iso(export.expires_at),
        "download_url": f"/api/v1/exports/{export.id}/download"
        if export.status is ExportStatus.READY and export.path
        else None,
    }


async def background_tasks(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: on shutdown, stop the exports being built. A half-written export is of no
    use and an orchestrator kills a process that takes long to stop: each cancelled export
    removes its files and is marked failed (``interrupted``), to be started again."""
    tasks: set[asyncio.Task[object]] = set()
    app[TASKS] = tasks
    yield
    pending = set(tasks)
    if pending:
        log.info("interrupting %d export(s) being built", len(pending))
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=EXPORT_STOP_SECONDS)

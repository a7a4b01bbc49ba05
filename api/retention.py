"""Retention over the API: deletions, erasure, holds, the forecast and proof of deletion."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from beanie import PydanticObjectId
from pydantic import Field

from api import params, views
from api.auth import principal_of
from api.state import CONFIG, DATABASE
from api.trail import audited
from retention import holds
from retention.forecast import forecast
from retention.records import purge_records
from store import accounts
from store.documents import Hold, HoldKind, utcnow

Reason = Annotated[str, Field(min_length=1, max_length=2000)]


class DeletionBody(params.BodyModel):
    deleted_at: params.IsoDatetime | None = None  # when the platform deleted it; default now


async def delete_account(request: web.Request) -> web.Response:
    """The account was deleted on the platform: its content is purged by deleted_at + grace."""
    account_id = params.account_id(request)
    body = await params.body(request, DeletionBody) if request.can_read_body else DeletionBody()
    now = utcnow()
    deleted_at = body.deleted_at or now
    if deleted_at > now:
        raise params.field_error("deleted_at", "a deletion cannot be in the future")
    await audited(request, "account.delete", target={"account_id": account_id})
    await accounts.mark_deleted(
        account_id=account_id, deleted_at=deleted_at,
        grace=request.app[CONFIG].retention.grace,
    )  # fmt: skip
    return await _account(request, account_id)


async def restore_account(request: web.Request) -> web.Response:
    account_id = params.account_id(request)
    await audited(request, "account.restore", target={"account_id": account_id})
    await accounts.restore(account_id=account_id)
    return await _account(request, account_id)


async def erase_account(request: web.Request) -> web.Response:
    """An erasure request: the account's content is due at once (holds still apply)."""
    account_id = params.account_id(request)
    await audited(request, "account.erasure", target={"account_id": account_id})
    await accounts.request_erasure(account_id=account_id, now=utcnow())
    response = await _account(request, account_id)
    response.set_status(202)
    return response


class PersonErasureBody(params.BodyModel):
    emails: Annotated[list[params.Email], Field(min_length=1, max_length=100)]
    names: Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]],
                     Field(max_length=10)] = []  # fmt: skip


async def erase_person(request: web.Request) -> web.Response:
    """An erasure of a person by address: every account that has or had one of them, and
    their unlinked content (filed under an account of its own), is due at once."""
    body = await params.body(request, PersonErasureBody)
    erasure = await accounts.erase_person(emails=body.emails, names=body.names, now=utcnow())
    # The addresses are not audited (they are what is being erased): the ids are.
    await audited(request, "erasure.person", target={"account_id": erasure.person})
    return web.json_response(views.person_erasure(erasure), status=202)


async def _account(request: web.Request, account_id: str) -> web.Response:
    summary = await accounts.account_summary(account_id=account_id, now=utcnow())
    return web.json_response(views.account(summary, role=principal_of(request).role))


class HoldBody(params.BodyModel):
    account_id: params.AccountId | None = None
    conversation_id: params.ObjectIdText | None = None
    kind: HoldKind
    reason: Reason
    case_ref: Annotated[str, Field(max_length=200)] | None = None
    expires_at: params.IsoDatetime | None = None


async def create_hold(request: web.Request) -> web.Response:
    body = await params.body(request, HoldBody)
    if (body.account_id is None) == (body.conversation_id is None):
        raise params.field_error("account_id", "give account_id or conversation_id (one)")
    if body.expires_at is not None and body.expires_at <= utcnow():
        raise params.field_error("expires_at", "must be in the future")
    conversation_id = PydanticObjectId(body.conversation_id) if body.conversation_id else None
    hold = await holds.place_hold(
        request.app[DATABASE], account_id=body.account_id, conversation_id=conversation_id,
        kind=body.kind, reason=body.reason, case_ref=body.case_ref, expires_at=body.expires_at,
        created_by=principal_of(request).key_name,
    )  # fmt: skip
    await audited(request, "hold.create", target=hold_target(hold))
    return web.json_response(views.hold(hold), status=201)


class HoldsParams(params.QueryModel):
    active: bool = True
    account_id: params.AccountId | None = None
    limit: params.Limit = params.DEFAULT_LIMIT


async def list_holds(request: web.Request) -> web.Response:
    p = params.query(request, HoldsParams)
    await audited(request, "hold.list", target={"account_id": p.account_id or ""})
    found = await holds.list_holds(
        now=utcnow(), active_only=p.active, account_id=p.account_id, limit=p.limit
    )
    return web.json_response({"holds": [views.hold(h) for h in found]})


class ReleaseBody(params.BodyModel):
    reason: Reason | None = None


async def release_hold(request: web.Request) -> web.Response:
    hold_id = params.object_id(request, "hold_id", what="hold")
    body = await params.body(request, ReleaseBody) if request.can_read_body else ReleaseBody()
    hold = await holds.release_hold(
        hold_id=hold_id, released_by=principal_of(request).key_name, reason=body.reason,
        now=utcnow(),
    )  # fmt: skip
    await audited(request, "hold.release", target=hold_target(hold))
    return web.json_response(views.hold(hold))


def hold_target(hold: Hold) -> dict[str, str]:
    """What a hold's audit event names (the API's and the web interface's)."""
    target = {"hold_id": str(hold.id)}
    if hold.account_id:
        target["account_id"] = hold.account_id
    if hold.conversation_id:
        target["conversation_id"] = str(hold.conversation_id)
    return target


async def get_forecast(request: web.Request) -> web.Response:
    await audited(request, "retention.forecast")
    items = await forecast(now=utcnow(), policy=request.app[CONFIG].retention)
    return web.json_response({"items": [views.forecast_item(i) for i in items]})


class PurgeRecordParams(params.QueryModel):
    account_id: params.AccountId


async def get_purge_records(request: web.Request) -> web.Response:
    p = params.query(request, PurgeRecordParams)
    await audited(request, "purge_records.read", target={"account_id": p.account_id})
    found = await purge_records(
        secret_key=request.app[CONFIG].retention.secret_key, account_id=p.account_id
    )
    done = [r for r in found if r.done_at is not None]
    return web.json_response({
        "account_id": p.account_id,
        "purged": bool(done),
        "records": [views.purge_record(r) for r in found],
    })  # fmt: skip

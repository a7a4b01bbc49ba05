"""Compliance's pages: holds, the retention forecast, exports and the disclosure register,
purge records with their deletion certificate, and verify-purge for an account."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Annotated, Any

from aiohttp import web
from beanie import PydanticObjectId
from pydantic import BaseModel, Field

from api import exports as api_exports
from api import params, views
from api.retention import hold_target
from api.state import CONFIG, DATABASE
from api.trail import audited
from exports.builder import get_export, list_exports
from retention import holds
from retention.forecast import forecast
from retention.records import purge_records, verify_purge
from retention.residue import describe
from store.documents import Account, Disclosure, HoldKind, utcnow
from web.pages import parse, render, see_other, session_of, values_of

HOLDS_SHOWN = 100
EXPORTS_SHOWN = 50
DISCLOSURES_SHOWN = 100
ObjectIdText = params.ObjectIdText
Text = Annotated[str, Field(min_length=1, max_length=500)]


# --- holds ----------------------------------------------------------------------------------


class HoldFilter(BaseModel):
    account_id: params.AccountId | None = None
    all: bool = False


class HoldForm(BaseModel):
    account_id: params.AccountId | None = None
    conversation_id: ObjectIdText | None = None
    kind: HoldKind
    reason: Annotated[str, Field(min_length=1, max_length=2000)]
    case_ref: Annotated[str, Field(max_length=200)] | None = None
    expires_on: date | None = None


class ReleaseForm(BaseModel):
    reason: Annotated[str, Field(max_length=2000)] | None = None


async def holds_page(request: web.Request) -> web.Response:
    return await _holds(request, form=values_of(request.query, HoldForm), errors={})


async def _holds(
    request: web.Request, *, form: dict[str, str], errors: dict[str, str], status: int = 200
) -> web.Response:
    wanted, filter_errors = parse(request.query, HoldFilter)
    wanted = wanted or HoldFilter()
    await audited(request, "hold.list", target={"account_id": wanted.account_id or ""})
    found = await holds.list_holds(now=utcnow(), active_only=not wanted.all,
                                   account_id=wanted.account_id, limit=HOLDS_SHOWN)  # fmt: skip
    return render(request, "holds.html", {
        "title": "Holds", "holds": found, "filter": wanted, "filter_errors": filter_errors,
        "form": form, "errors": errors, "kinds": list(HoldKind),
        "placed": request.query.get("placed"), "released": request.query.get("released"),
    }, status=status)  # fmt: skip


async def place_hold(request: web.Request) -> web.Response:
    posted = await request.post()
    form, errors = parse(posted, HoldForm)
    if form is not None:
        errors = _hold_scope_errors(form)
    if form is None or errors:
        return await _holds(request, form=values_of(posted, HoldForm), errors=errors, status=422)
    hold = await holds.place_hold(
        request.app[DATABASE], account_id=form.account_id,
        conversation_id=PydanticObjectId(form.conversation_id) if form.conversation_id else None,
        kind=form.kind, reason=form.reason, case_ref=form.case_ref,
        expires_at=_end_of(form.expires_on), created_by=session_of(request).key_name,
    )  # fmt: skip
    await audited(request, "hold.create", target=hold_target(hold))
    return see_other(f"/holds?placed={hold.id}")


def _hold_scope_errors(form: HoldForm) -> dict[str, str]:
    if (form.account_id is None) == (form.conversation_id is None):
        return {"account_id": "give an account or a conversation (one)"}
    if form.expires_on is not None and form.expires_on <= utcnow().date():
        return {"expires_on": "must be after today"}
    return {}


def _end_of(day: date | None) -> datetime | None:
    """A hold that expires on a day lasts until that day begins (UTC)."""
    return datetime.combine(day, time(0), tzinfo=UTC) if day else None


async def release_hold(request: web.Request) -> web.Response:
    hold_id = params.object_id(request, "hold_id", what="hold")
    form, errors = parse(await request.post(), ReleaseForm)
    if form is None:
        return await _holds(request, form={}, errors=errors, status=422)
    hold = await holds.release_hold(hold_id=hold_id, released_by=session_of(request).key_name,
                                    reason=form.reason, now=utcnow())  # fmt: skip
    await audited(request, "hold.release", target=hold_target(hold))
    return see_other(f"/holds?released={hold.id}")


# --- the forecast ---------------------------------------------------------------------------


async def forecast_page(request: web.Request) -> web.Response:
    await audited(request, "retention.forecast")
    items = await forecast(now=utcnow(), policy=request.app[CONFIG].retention)
    return render(request, "forecast.html", {"title": "Retention forecast", "items": items})


# --- exports --------------------------------------------------------------------------------


class ExportForm(BaseModel):
    account_id: params.AccountId | None = None
    hold_id: ObjectIdText | None = None
    authority: Text | None = None
    legal_basis: Text | None = None


async def exports_page(request: web.Request) -> web.Response:
    return await _exports(request, form=values_of(request.query, ExportForm), errors={})


async def _exports(
    request: web.Request, *, form: dict[str, str], errors: dict[str, str], status: int = 200
) -> web.Response:
    await audited(request, "export.list", target={"account_id": ""})
    page = await list_exports(account_id=None, limit=EXPORTS_SHOWN, after=None)
    return render(request, "exports.html", {"title": "Exports", "exports": page.items,
                  "form": form, "errors": errors}, status=status)  # fmt: skip


async def start_export(request: web.Request) -> web.Response:
    """A subject-access export of an account, or a disclosure of a hold's scope to an
    authority (entered in the register); built in the background, like the API's."""
    posted = await request.post()
    form, errors = parse(posted, ExportForm)
    if form is not None:
        errors = _export_errors(form)
    if form is None or errors:
        return await _exports(request, form=values_of(posted, ExportForm), errors=errors,
                              status=422)  # fmt: skip
    export = await api_exports.begin_export(
        request, who=session_of(request).key_name, account_id=form.account_id,
        hold_id=form.hold_id, authority=form.authority, legal_basis=form.legal_basis,
    )  # fmt: skip
    return see_other(f"/exports/{export.id}")


def _export_errors(form: ExportForm) -> dict[str, str]:
    if (form.account_id is None) == (form.hold_id is None):
        return {"account_id": "give an account, or a hold for a disclosure (one)"}
    if form.hold_id is not None and not form.authority:
        return {"authority": "a disclosure names the authority"}
    if form.hold_id is not None and not form.legal_basis:
        return {"legal_basis": "a disclosure names its legal basis"}
    return {}


async def export_page(request: web.Request) -> web.Response:
    """One export's progress (the page reloads itself while it runs) and its download."""
    export = await get_export(params.object_id(request, "export_id", what="export"))
    return render(request, "export.html", {"title": f"Export {export.id}", "export": export})


async def download_export(request: web.Request) -> web.StreamResponse:
    return await api_exports.download_export(request)


async def disclosures_page(request: web.Request) -> web.Response:
    await audited(request, "disclosure.list")
    found = await Disclosure.find().sort("-disclosed_at").limit(DISCLOSURES_SHOWN).to_list()
    return render(request, "disclosures.html", {"title": "Disclosure register",
                                                "disclosures": found})  # fmt: skip


# --- proof of deletion ----------------------------------------------------------------------


class AccountForm(BaseModel):
    account_id: params.AccountId


async def purge_records_page(request: web.Request) -> web.Response:
    """Whether and when an account was purged, each purge with its deletion certificate."""
    form, errors = parse(request.query, AccountForm)
    context: dict[str, Any] = {"title": "Purge records", "errors": errors, "records": None,
                               "form": values_of(request.query, AccountForm)}  # fmt: skip
    if form is None:
        return render(request, "purge_records.html", context, status=400 if errors and
                      request.query else 200)  # fmt: skip
    await audited(request, "purge_records.read", target={"account_id": form.account_id})
    found = await purge_records(
        secret_key=request.app[CONFIG].retention.secret_key, account_id=form.account_id
    )
    context["records"] = [views.purge_record(r) for r in found]
    context["purged"] = any(r.done_at is not None for r in found)
    return render(request, "purge_records.html", context)


class VerifyForm(BaseModel):
    account_id: params.AccountId
    emails: Annotated[str, Field(max_length=2000)] = ""
    names: Annotated[str, Field(max_length=2000)] = ""


async def verify_purge_page(request: web.Request) -> web.Response:
    """``verify-purge`` in a page: the purge records and a residue scan run now."""
    form, errors = parse(request.query, VerifyForm)
    context: dict[str, Any] = {"title": "Verify a purge", "errors": errors, "result": None,
                               "form": values_of(request.query, VerifyForm)}  # fmt: skip
    if form is None:
        return render(request, "verify_purge.html", context,
                      status=400 if errors and request.query else 200)  # fmt: skip
    emails = [e.strip().lower() for e in form.emails.replace(",", " ").split() if e.strip()]
    names = [n.strip() for n in form.names.splitlines() if n.strip()]
    known = await Account.get(form.account_id) is not None
    if not known and not (emails or names):
        context["errors"] = {
            "account_id": "the archive has no such account (a purged one keeps "
            "its id): check the id, or give addresses or names to scan for"
        }
        return render(request, "verify_purge.html", context, status=404)
    policy = request.app[CONFIG].retention
    await audited(request, "purge_records.read", target={"account_id": form.account_id})
    records = await purge_records(secret_key=policy.secret_key,
                                            account_id=form.account_id)  # fmt: skip
    residue = await verify_purge(account_id=form.account_id, emails=emails,
                                           names=names, now=utcnow(), policy=policy)  # fmt: skip
    context["result"] = {"known": known, "records": [views.purge_record(r) for r in records],
                         "verdict": describe(residue), "residue": residue}  # fmt: skip
    return render(request, "verify_purge.html", context)

"""``GET /api/v1/openapi.json``: the API described as OpenAPI 3.1.

Request parameters and bodies come from the same pydantic models the handlers validate with,
so the description cannot drift from what is enforced.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from api.accounts import AccountBody, AccountsParams
from api.audit_log import AuditParams
from api.search import SearchParams
from api.state import OPENAPI_PATHS
from store.accounts import ACCOUNT_ID_PATTERN

Json = dict[str, Any]
REF = "#/components/schemas/{model}"


def _schema(model: type[BaseModel], components: Json) -> Json:
    schema = model.model_json_schema(ref_template=REF)
    components.update(schema.pop("$defs", {}))
    return schema


def _query_parameters(model: type[BaseModel], components: Json) -> list[Json]:
    schema = _schema(model, components)
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema["properties"].items()
    ]


def _path(name: str, schema: Json) -> Json:
    return {"name": name, "in": "path", "required": True, "schema": schema}


OBJECT_ID = {"type": "string"}  # any other string is simply not found (404)
ACCOUNT_ID = {"type": "string", "pattern": ACCOUNT_ID_PATTERN}

PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

NULLABLE_STRING = {"type": ["string", "null"]}
AUTHOR = {
    "type": "object",
    "required": ["role"],
    "properties": {"role": {"type": "string"}, "name": NULLABLE_STRING, "email": NULLABLE_STRING},
}
HIT = {
    "type": "object",
    "required": ["message_id", "conversation_id", "channel", "sent_at", "snippet"],
    "properties": {
        "message_id": {"type": "string"},
        "conversation_id": {"type": "string"},
        "account_id": NULLABLE_STRING,
        "channel": {"enum": ["email", "chat"]},
        "subject": NULLABLE_STRING,
        "author": AUTHOR,
        "sent_at": {"type": "string", "format": "date-time"},
        "snippet": {"type": "string", "description": "HTML-escaped; matches in <mark>"},
    },
}
MESSAGE = {
    "type": "object",
    "required": ["id", "conversation_id", "channel", "direction", "sent_at", "text"],
    "properties": {
        "id": {"type": "string"},
        "conversation_id": {"type": "string"},
        "account_id": NULLABLE_STRING,
        "channel": {"enum": ["email", "chat"]},
        "direction": {"enum": ["inbound", "outbound", "internal"]},
        "subject": NULLABLE_STRING,
        "author": AUTHOR,
        "sent_at": {"type": "string", "format": "date-time"},
        "collected_at": {
            "type": "string", "format": "date-time",
            "description": "when the company first received it (the maximum age counts from it)",
        },
        "archived_at": {
            "type": "string", "format": "date-time", "description": "when the archive received it",
        },
        "status": {"const": "filed"},
        "text": {"type": "string"},
        "html": NULLABLE_STRING,
        "attachments": {"type": "array", "items": {"type": "object"}},
        "raw_url": NULLABLE_STRING,
        "parse_error": NULLABLE_STRING,
        "shares_message_id": {
            "type": "boolean",
            "description": "another message with other content carries the same Message-ID",
        },
        "history": {"type": "array", "items": {"type": "object"}},
        "deleted_at_source": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "when the chat source said it deleted the message (text kept)",
        },
        "unfetched_attachments": {
            "type": "array",
            "items": {"type": "object"},
            "description": "attachments named by URL and not fetched: what is known, and why",
        },
    },
}  # fmt: skip
FILING = {
    "type": "object",
    "description": "An acknowledged message still being filed: only an email's original is "
    "readable (a chat message has none)",
    "required": ["id", "status", "channel", "size", "archived_at", "raw_url"],
    "properties": {
        "id": {"type": "string"},
        "status": {"const": "filing"},
        "channel": {"enum": ["email", "chat"]},
        "size": {"type": "integer", "description": "bytes of the mail, or of the webhook call"},
        "archived_at": {"type": "string", "format": "date-time"},
        "raw_url": NULLABLE_STRING,
    },
}
CONVERSATION_FILING = {
    "type": "object",
    "description": "A chat conversation still being filed, with the messages its call named",
    "required": ["id", "status", "channel", "archived_at", "messages"],
    "properties": {
        "id": {"type": "string"},
        "status": {"const": "filing"},
        "channel": {"const": "chat"},
        "archived_at": {"type": "string", "format": "date-time"},
        "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Filing"}},
    },
}
CONVERSATION = {
    "type": "object",
    "required": ["id", "status", "channel", "messages"],
    "properties": {
        "id": {"type": "string"},
        "status": {"const": "filed"},
        "channel": {"enum": ["email", "chat"]},
        "account_id": NULLABLE_STRING,
        "subject": NULLABLE_STRING,
        "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}},
    },
}
DATE_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
ACCOUNT = {
    "type": "object",
    "description": "Compliance and admin keys see every field. Agent and platform keys see a "
    "deleted account's status only (id, status, deleted_at, purge_due_at, purged_at: no emails, "
    "name, counts or holds), and holds without their reason and case_ref.",
    "required": ["id", "status", "deleted_at", "purge_due_at", "purged_at"],
    "properties": {
        "id": {"type": "string"},
        "status": {"enum": ["active", "deleted"]},
        "deleted_at": DATE_TIME_OR_NULL,
        "purge_due_at": DATE_TIME_OR_NULL,
        "purged_at": DATE_TIME_OR_NULL,
        "emails": {"type": "array", "items": {"type": "string"}},
        "name": NULLABLE_STRING,
        "life": {
            "type": "integer",
            "minimum": 1,
            "description": "compliance and admin only: which life of the id this is "
            "(registering a purged id again starts a new one, without any of the old content)",
        },
        "life_started_at": {
            **DATE_TIME_OR_NULL,
            "description": "compliance and admin only: when this life began (null: the first)",
        },
        "new_life": {
            "type": "boolean",
            "description": "in the answer to a PUT only: it registered a purged id again, and "
            "so started a new life",
        },
        "counts": {"type": "object"},
        "active_holds": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "kind", "created_by", "created_at"],
                "properties": {
                    "id": {"type": "string"},
                    "kind": {"enum": ["dispute", "criminal_investigation", "legal_obligation"]},
                    "reason": {"type": "string", "description": "compliance and admin only"},
                    "case_ref": {**NULLABLE_STRING, "description": "compliance and admin only"},
                },
            },
        },
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}


def _json(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def _problems(*statuses: int) -> Json:
    described = {
        400: "The request is malformed",
        401: "No valid API key (or webhook signature)",
        403: "The key's role may not do this",
        404: "Not found (or not visible to this role)",
        409: "Conflicts with the current state",
        413: "The body is too large",
        415: "The body must be application/json",
        422: "Invalid fields; `errors` names each",
        503: "The database is unavailable; retry after Retry-After seconds",
    }
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {str(s): {"description": described[s], "content": problem} for s in statuses}


# Every authenticated operation may answer these (a bad body or id, no key, wrong role, no db).
AUTHED = (400, 401, 403, 422, 503)


def _operation(
    summary: str, ok: Json, *, problems: tuple[int, ...], public: bool = False, **extra: Any
) -> Json:
    operation: Json = {"summary": summary, "responses": {**ok, **_problems(*problems)}, **extra}
    if public:
        operation["security"] = []
    return operation


HOLD = {
    "type": "object",
    "required": ["id", "kind", "reason", "created_by", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "account_id": NULLABLE_STRING,
        "conversation_id": NULLABLE_STRING,
        "kind": {"enum": ["dispute", "criminal_investigation", "legal_obligation"]},
        "reason": {"type": "string"},
        "case_ref": NULLABLE_STRING,
        "created_by": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "expires_at": {"type": ["string", "null"], "format": "date-time"},
        "released_at": {"type": ["string", "null"], "format": "date-time"},
    },
}


def _retention_paths(components: Json) -> Json:
    from api.retention import (
        DeletionBody,
        HoldBody,
        HoldsParams,
        PersonErasureBody,
        PurgeRecordParams,
        ReleaseBody,
    )

    account = {"$ref": "#/components/schemas/Account"}
    hold = HOLD
    account_param = [_path("account_id", ACCOUNT_ID)]
    optional_body = {
        "deletion": {"required": False, "content": _json(_schema(DeletionBody, components))},
        "release": {"required": False, "content": _json(_schema(ReleaseBody, components))},
    }
    return {
        "/api/v1/accounts/{account_id}/deletion": {
            "parameters": account_param,
            "post": _operation(
                "The account was deleted: purge its content by deleted_at + grace",
                {"200": {"description": "Marked deleted", "content": _json(account)}},
                problems=(404, 415, *AUTHED), requestBody=optional_body["deletion"]),
            "delete": _operation(
                "Restore: cancel the deletion before the purge",
                {"200": {"description": "Restored", "content": _json(account)}},
                problems=(404, 409, *AUTHED)),
        },
        "/api/v1/accounts/{account_id}/erasure": {"post": _operation(
            "Erasure request: the account's content is due now (holds apply)",
            {"202": {"description": "Due now", "content": _json(account)}},
            problems=(404, *AUTHED), parameters=account_param)},
        "/api/v1/erasures": {"post": _operation(
            "Erasure of a person by address: every account that has or had one of them, and "
            "their unlinked content, is due now (holds apply)",
            {"202": {"description": "Due now", "content": _json({
                "type": "object", "required": ["person_account_id", "account_ids"],
                "properties": {
                    "person_account_id": {"type": "string"},
                    "account_ids": {"type": "array", "items": {"type": "string"}},
                    "purge_records": {"type": "array", "items": {"type": "string"}},
                }})}},
            problems=(415, *AUTHED),
            requestBody={"required": True,
                         "content": _json(_schema(PersonErasureBody, components))})},
        "/api/v1/holds": {
            "post": _operation(
                "Place a hold on an account or a conversation",
                {"201": {"description": "Placed", "content": _json(hold)}},
                problems=(404, 415, *AUTHED),
                requestBody={"required": True, "content": _json(_schema(HoldBody, components))}),
            "get": _operation(
                "Holds, newest first",
                {"200": {"description": "Holds", "content": _json({
                    "type": "object",
                    "properties": {"holds": {"type": "array", "items": hold}}})}},
                problems=AUTHED, parameters=_query_parameters(HoldsParams, components)),
        },
        "/api/v1/holds/{hold_id}/release": {"post": _operation(
            "Release a hold: overdue content becomes due at once",
            {"200": {"description": "Released", "content": _json(hold)}},
            problems=(404, 409, 415, *AUTHED), parameters=[_path("hold_id", OBJECT_ID)],
            requestBody=optional_body["release"])},
        "/api/v1/retention/forecast": {"get": _operation(
            "What will be purged when, and what holds block",
            {"200": {"description": "Forecast", "content": _json({"type": "object"})}},
            problems=AUTHED)},
        "/api/v1/purge-records": {"get": _operation(
            "Whether and when an account's content was purged: each purge's counts, pending "
            "blobs and residue scan (the deletion certificate; no personal data)",
            {"200": {"description": "Records", "content": _json({"type": "object"})}},
            problems=AUTHED, parameters=_query_parameters(PurgeRecordParams, components))},
    }  # fmt: skip


def _page(name: str, item: Json) -> Json:
    return _json({
        "type": "object", "required": [name, "next_cursor"],
        "properties": {name: {"type": "array", "items": item}, "next_cursor": NULLABLE_STRING},
    })  # fmt: skip


def _export_paths(components: Json) -> Json:
    from api.exports import DisclosureParams, ExportBody, ExportsParams

    export = {
        "type": "object",
        "required": ["id", "status"],
        "properties": {
            "id": {"type": "string"},
            "status": {"enum": ["running", "ready", "failed"]},
            "size": {"type": ["integer", "null"]},
            "manifest_sha256": NULLABLE_STRING,
            "download_url": NULLABLE_STRING,
        },
    }
    export_id = [_path("export_id", OBJECT_ID)]
    return {
        "/api/v1/exports": {"get": _operation(
            "The exports not yet expired, newest first (compliance); account_id filters",
            {"200": {"description": "A page of exports", "content": _page("exports", export)}},
            problems=AUTHED, parameters=_query_parameters(ExportsParams, components),
        ), "post": _operation(
            "Start an export: {account_id} (subject access) or {hold_id, authority, "
            "legal_basis} (disclosure, entered in the register)",
            {"202": {"description": "Started", "content": _json(export)}},
            problems=(404, 415, *AUTHED),
            requestBody={"required": True, "content": _json(_schema(ExportBody, components))})},
        "/api/v1/exports/{export_id}": {"get": _operation(
            "An export's status, size and manifest hash",
            {"200": {"description": "The export", "content": _json(export)}},
            problems=(404, *AUTHED), parameters=export_id)},
        "/api/v1/exports/{export_id}/download": {"get": _operation(
            "The zip (X-Manifest-SHA256 is the SHA-256 of its manifest.json)",
            {"200": {"description": "The zip", "content": {"application/zip": {
                "schema": {"type": "string", "format": "binary"}}}}},
            problems=(404, 409, *AUTHED), parameters=export_id)},
        "/api/v1/disclosures": {"get": _operation(
            "The register of disclosures to authorities (no message content)",
            {"200": {"description": "Disclosures", "content": _json({"type": "object"})}},
            problems=AUTHED, parameters=_query_parameters(DisclosureParams, components))},
    }  # fmt: skip


def build_spec(extra_paths: Json | None = None) -> Json:
    """The description; ``extra_paths`` are routes other packages add (the chat webhooks)."""
    extra_paths = extra_paths or {}
    components: Json = {
        "Problem": PROBLEM,
        "Hit": HIT,
        "Message": MESSAGE,
        "Filing": FILING,
        "Conversation": CONVERSATION,
        "ConversationFiling": CONVERSATION_FILING,
        "Account": ACCOUNT,
    }
    ref = {name: {"$ref": f"#/components/schemas/{name}"} for name in components}
    search_params = _query_parameters(SearchParams, components)
    audit_params = _query_parameters(AuditParams, components)
    accounts_params = _query_parameters(AccountsParams, components)
    account_body = _schema(AccountBody, components)
    binary = {"schema": {"type": "string", "format": "binary"}}
    paths: Json = {
        "/healthz": {
            "get": _operation(
                "Liveness",
                {"200": {"description": "Up", "content": _json({"type": "object"})}},
                problems=(),
                public=True,
            )
        },
        "/readyz": {
            "get": _operation(
                "Readiness: the database answers",
                {"200": {"description": "Ready", "content": _json({"type": "object"})}},
                problems=(503,),
                public=True,
            )
        },
        "/metrics": {
            "get": _operation(
                "Prometheus metrics",
                {
                    "200": {
                        "description": "Metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                problems=(),
                public=True,
            )
        },
        "/api/v1/openapi.json": {
            "get": _operation(
                "This description",
                {"200": {"description": "OpenAPI", "content": _json({"type": "object"})}},
                problems=(),
                public=True,
            )
        },
        "/api/v1/accounts": {
            "get": _operation(
                "Accounts, newest first (platform, compliance, admin), by status or address. "
                "Platform keys see a deleted account's status only, and an address finds "
                "active accounts only for them",
                {
                    "200": {
                        "description": "A page of accounts",
                        "content": _page("accounts", ref["Account"]),
                    }
                },
                problems=AUTHED,
                parameters=accounts_params,
            )
        },
        "/api/v1/accounts/{account_id}": {
            "parameters": [_path("account_id", ACCOUNT_ID)],
            "put": _operation(
                "Register or update an account (platform); links its unlinked conversations. "
                "An address of another active account is a 409 naming that account. The id of "
                "a purged account starts a new life of it (201, new_life true): active, with "
                "none of the old content",
                {
                    "200": {"description": "Updated", "content": _json(ref["Account"])},
                    "201": {
                        "description": "Created, or a new life of a purged account's id",
                        "content": _json(ref["Account"]),
                    },
                },
                problems=(409, 415, *AUTHED),
                requestBody={"required": True, "content": _json(account_body)},
            ),
            "get": _operation(
                "An account: status, emails, counts, active holds, purge due (a deleted "
                "account: its status only, unless the key is compliance or admin)",
                {"200": {"description": "The account", "content": _json(ref["Account"])}},
                problems=(404, *AUTHED),
            ),
        },
        "/api/v1/search": {
            "get": _operation(
                'Full-text search over subjects, bodies and attachments: words, "phrases", '
                "-exclusions, OR, parentheses, from: to: subject: account: channel: "
                "has:attachment is:internal before: after:; BM25 over every match, or "
                "sort=newest (docs/search.md). A query that cannot be run is a 400 whose error "
                "names the field q and the position.",
                {
                    "200": {
                        "description": "A page of hits, and the exact number of matches",
                        "content": _json(
                            {
                                "type": "object",
                                "required": ["hits", "total", "next_cursor"],
                                "properties": {
                                    "hits": {"type": "array", "items": ref["Hit"]},
                                    "total": {"type": "integer", "minimum": 0},
                                    "next_cursor": NULLABLE_STRING,
                                },
                            }
                        ),
                    }
                },
                problems=AUTHED,
                parameters=search_params,
            )
        },
        "/api/v1/conversations/{conversation_id}": {
            "get": _operation(
                "A conversation with its messages in order",
                {
                    "200": {
                        "description": "The conversation, or that it is being filed",
                        "content": _json(
                            {"oneOf": [ref["Conversation"], ref["ConversationFiling"]]}
                        ),
                    }
                },
                problems=(404, *AUTHED),
                parameters=[_path("conversation_id", OBJECT_ID)],
            )
        },
        "/api/v1/messages/{message_id}": {
            "get": _operation(
                "A message",
                {
                    "200": {
                        "description": "The message, or that it is being filed",
                        "content": _json({"oneOf": [ref["Message"], ref["Filing"]]}),
                    }
                },
                problems=(404, *AUTHED),
                parameters=[_path("message_id", OBJECT_ID)],
            )
        },
        "/api/v1/messages/{message_id}/raw": {
            "get": _operation(
                "The original bytes of an email, byte-identical",
                {"200": {"description": "The .eml", "content": {"message/rfc822": binary}}},
                problems=(404, *AUTHED),
                parameters=[_path("message_id", OBJECT_ID)],
            )
        },
        "/api/v1/messages/{message_id}/attachments/{n}": {
            "get": _operation(
                "An attachment, as a download",
                {"200": {"description": "The attachment", "content": {"*/*": binary}}},
                problems=(404, *AUTHED),
                parameters=[_path("message_id", OBJECT_ID), _path("n", {"type": "string"})],
            )
        },
        "/api/v1/audit": {
            "get": _operation(
                "The audit trail (admin), newest first",
                {
                    "200": {
                        "description": "A page of events",
                        "content": _json(
                            {
                                "type": "object",
                                "required": ["events", "next_cursor"],
                                "properties": {
                                    "events": {"type": "array", "items": {"type": "object"}},
                                    "next_cursor": NULLABLE_STRING,
                                },
                            }
                        ),
                    }
                },
                problems=AUTHED,
                parameters=audit_params,
            )
        },
        **_retention_paths(components),
        **_export_paths(components),
    }
    paths.update(extra_paths)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Support Archive API",
            "version": "1",
            "description": "Support emails and chats, searchable, linked to accounts, deleted "
            "on time. Errors are application/problem+json.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(build_spec(request.app[OPENAPI_PATHS]))

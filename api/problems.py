"""Errors as RFC 9457 ``application/problem+json``, mapped in one middleware."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from api.params import PATTERN_MEANINGS
from store.errors import Conflict, NotFound, is_transient

log = logging.getLogger("archive.api")

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = 5


def problem(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or _reason(status),
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = list(errors)
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type=PROBLEM_JSON,
        headers=headers,
    )


def field_errors(exc: ValidationError, *, prefix: str = "") -> list[dict[str, str]]:
    """pydantic's errors as ``[{"field": "messages[0].sent_at", "message": ...}]``."""
    return [
        {"field": prefix + _field_path(error["loc"]), "message": _message(error)}
        for error in exc.errors(include_url=False)
    ]


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "string_pattern_mismatch":
        meaning = PATTERN_MEANINGS.get(str((error.get("ctx") or {}).get("pattern")))
        if meaning is not None:
            return meaning
    return str(error["msg"])


def _field_path(loc: Iterable[int | str]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(body)"


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def unavailable(detail: str = "the database is unavailable; retry later") -> web.Response:
    return problem(503, detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.content_type == PROBLEM_JSON:
            raise
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else None
        return problem(exc.status, detail, title=exc.reason, headers=_kept_headers(exc))
    except ValidationError as exc:
        return problem(422, "the request has invalid fields", errors=field_errors(exc))
    except NotFound as exc:
        return problem(404, str(exc) or None)
    except Conflict as exc:
        return problem(409, str(exc) or None)
    except Exception as exc:
        if is_transient(exc):
            log.warning("%s %s: database unavailable: %s", request.method, request.path, exc)
            return unavailable()
        log.exception("%s %s failed", request.method, request.path)
        return problem(500, "an internal error occurred; it has been logged")


def _kept_headers(exc: web.HTTPException) -> dict[str, str]:
    keep = ("Allow", "Retry-After", "WWW-Authenticate")
    return {name: exc.headers[name] for name in keep if name in exc.headers}

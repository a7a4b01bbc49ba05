"""Reading requests: validated query parameters and bodies, ids, limits and cursors.

Everything a client sends goes through a pydantic model here, so a handler only ever holds
plain strings, numbers, datetimes and enums: nothing reaches MongoDB as an operator.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime
from typing import Annotated, Any, TypeVar

from aiohttp import web
from beanie import PydanticObjectId
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

from store.accounts import ACCOUNT_ID_PATTERN, ACCOUNT_ID_RULE
from store.documents import in_utc_range
from store.errors import NotFound
from store.paging import Key

M = TypeVar("M", bound=BaseModel)

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT)]
AccountId = Annotated[str, Field(pattern=ACCOUNT_ID_PATTERN)]
OBJECT_ID_PATTERN = r"^[0-9a-f]{24}$"
ObjectIdText = Annotated[str, Field(pattern=OBJECT_ID_PATTERN)]
# No \s: Python's and JSON Schema's (ECMA) differ, and the schema must say what we check.
EMAIL_PATTERN = r"^[^@\x00-\x20\x7f-\x9f]+@[^@\x00-\x20\x7f-\x9f]+$"
# What a field's pattern means, said to the client instead of the pattern itself.
PATTERN_MEANINGS = {
    EMAIL_PATTERN: "not an email address: name@domain, without spaces",
    ACCOUNT_ID_PATTERN: f"not an account id: {ACCOUNT_ID_RULE}",
    OBJECT_ID_PATTERN: "not an id: 24 hexadecimal digits (0-9, a-f)",
}


def _iso_only(value: object) -> object:
    # pydantic would read "1700000000", "0.5" or a JSON number as unix time; the API promises
    # ISO 8601 (a JSON 0 was taken for 1970-01-01: schemathesis found it).
    if not isinstance(value, str | datetime) or (
        isinstance(value, str) and not re.match(r"^\d{4}-\d{2}-\d{2}", value)
    ):
        raise ValueError("an ISO 8601 date-time with a timezone, e.g. 2026-01-31T09:00:00Z")
    return value


# An email address as bodies take it: lowercased, as accounts store them.
Email = Annotated[str, Field(max_length=320, pattern=EMAIL_PATTERN), AfterValidator(str.lower)]
IsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_only), AfterValidator(in_utc_range)]


class QueryModel(BaseModel):
    """Base of query-parameter models: unknown parameters are refused, so a typo is an error
    rather than a silently ignored filter."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BodyModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def query(request: web.Request, model: type[M]) -> M:
    values: dict[str, str] = {}
    for name in request.query:
        all_values = request.query.getall(name)
        if len(all_values) > 1:
            raise field_error(name, "give this parameter once")
        values[name] = all_values[0]
    return model.model_validate(values)


async def body(request: web.Request, model: type[M]) -> M:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="send application/json")
    raw = await request.read()
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise web.HTTPBadRequest(text=f"the body is not valid JSON: {exc}") from None
    return model.model_validate(data)


def object_id(request: web.Request, name: str, *, what: str) -> PydanticObjectId:
    """A path id; one that cannot be an id is simply not found."""
    value = request.match_info[name]
    if len(value) != 24 or not all(c in "0123456789abcdef" for c in value):
        raise NotFound(f"no {what} {value!r}")
    return PydanticObjectId(value)


def account_id(request: web.Request) -> str:
    value = request.match_info["account_id"]
    try:
        return _AccountIdModel.model_validate({"account_id": value}).account_id
    except ValidationError:
        raise field_error("account_id", ACCOUNT_ID_RULE) from None


class _AccountIdModel(BaseModel):
    account_id: AccountId


def page_cursor(next_key: Key | None) -> str | None:
    """The cursor of the page after one whose last item has ``next_key`` (None: no more)."""
    if next_key is None:
        return None
    at, ident = next_key
    return encode_cursor({"t": at.isoformat(), "i": str(ident)})


def encode_cursor(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str, model: type[M]) -> M:
    """An opaque cursor back into its position; anything that is not one we made is a 422."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return model.model_validate(data)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise field_error("cursor", "not a cursor this API returned") from None


def field_error(field: str, message: str) -> ValidationError:
    return ValidationError.from_exception_data(
        "request",
        [
            {
                "type": "value_error",
                "loc": (field,),
                "input": None,
                "ctx": {"error": ValueError(message)},
            }
        ],
    )

"""Keyset pagination, newest first: stable while documents are added (no offsets)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from beanie import Document, PydanticObjectId, SortDirection

D = TypeVar("D", bound=Document)
# (time, id) of a document: ids are ObjectIds, or strings where the id is given (accounts).
Key = tuple[datetime, PydanticObjectId | str]


@dataclass(frozen=True)
class Page(Generic[D]):
    items: list[D]
    # (time, id) of the last item when there may be more, else None.
    next_key: Key | None


def newest_first(time_field: str) -> list[tuple[str, SortDirection]]:
    """The order of every listing: newest first, ties broken by id (unique), so stable."""
    return [(time_field, SortDirection.DESCENDING), ("_id", SortDirection.DESCENDING)]


def before(time_field: str, key: Key) -> dict[str, Any]:
    """Documents strictly after ``key`` in (time desc, id desc) order."""
    at, ident = key
    return {"$or": [{time_field: {"$lt": at}}, {time_field: at, "_id": {"$lt": ident}}]}


async def keyset_page(
    model: type[D],
    query: dict[str, Any],
    *,
    time_field: str,
    limit: int,
    after: Key | None,
) -> Page[D]:
    if after is not None:
        query = {"$and": [query, before(time_field, after)]}
    found = await model.find(query).sort(newest_first(time_field)).limit(limit + 1).to_list()
    items = found[:limit]
    more = len(found) > limit
    last = items[-1] if items else None
    next_key = (getattr(last, time_field), last.id) if more and last and last.id else None
    return Page(items=items, next_key=next_key)

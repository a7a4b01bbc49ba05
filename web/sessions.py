"""Server-side sessions in MongoDB (``web_sessions``): only a SHA-256 of the session id is
stored, with the key's name and role, so a copy of the database signs nobody in."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.collection import AsyncCollection

from store.database import Database
from store.documents import ApiKey, Role
from web.state import Session, WebConfig

COLLECTION = "web_sessions"
COOKIE = "sa_session"
# last_seen_at is written at most this often per session, not on every page.
TOUCH_RESOLUTION = timedelta(minutes=1)


def _collection(database: Database) -> AsyncCollection[dict[str, Any]]:
    return database.db[COLLECTION]


def id_sha256(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


async def create_indexes(database: Database) -> None:
    """The TTL index removes sessions past their end (MongoDB's monitor runs every minute;
    ``load`` refuses them from the exact moment)."""
    collection = _collection(database)
    await collection.create_index("expires_at", name="ttl", expireAfterSeconds=0)
    await collection.create_index("key_id", name="key")


def _expires_at(created_at: datetime, last_seen_at: datetime, config: WebConfig) -> datetime:
    return min(last_seen_at + config.idle, created_at + config.absolute)


async def start(
    database: Database, *, key: ApiKey, now: datetime, config: WebConfig
) -> tuple[str, Session]:
    """A new session for ``key``; returns the session id (the cookie's value, never stored)."""
    session_id = secrets.token_urlsafe(32)
    session = Session(
        id_sha256=id_sha256(session_id), key_id=str(key.id), key_name=key.name, role=key.role,
        csrf=secrets.token_urlsafe(32), created_at=now, last_seen_at=now,
    )  # fmt: skip
    await _collection(database).insert_one(
        {"_id": session.id_sha256, "key_id": session.key_id, "key_name": key.name,
         "role": key.role.value, "csrf": session.csrf, "created_at": now,
         "last_seen_at": now, "expires_at": _expires_at(now, now, config)}
    )  # fmt: skip
    return session_id, session


async def load(
    database: Database, session_id: str, *, now: datetime, config: WebConfig
) -> Session | None:
    """The live session of this id, touched; None when unknown, idle too long, past its
    absolute end, or its key was revoked (then it is ended)."""
    if not session_id or len(session_id) > 100:
        return None
    collection = _collection(database)
    doc = await collection.find_one({"_id": id_sha256(session_id)})
    if doc is None:
        return None
    session = _session(doc)
    if now >= _expires_at(session.created_at, session.last_seen_at, config) or not (
        await _key_is_live(session.key_id)
    ):
        await collection.delete_one({"_id": session.id_sha256})
        return None
    if now - session.last_seen_at >= TOUCH_RESOLUTION:
        await collection.update_one(
            {"_id": session.id_sha256},
            {"$set": {"last_seen_at": now,
                      "expires_at": _expires_at(session.created_at, now, config)}},
        )  # fmt: skip
    return session


async def _key_is_live(key_id: str) -> bool:
    if not ObjectId.is_valid(key_id):
        return False
    found = await ApiKey.get_pymongo_collection().find_one(
        {"_id": ObjectId(key_id), "revoked_at": None}, {"_id": 1}
    )
    return found is not None


def _session(doc: dict[str, Any]) -> Session:
    return Session(
        id_sha256=doc["_id"], key_id=doc["key_id"], key_name=doc["key_name"],
        role=Role(doc["role"]), csrf=doc["csrf"], created_at=doc["created_at"],
        last_seen_at=doc["last_seen_at"],
    )  # fmt: skip


async def end(database: Database, session: Session) -> None:
    await _collection(database).delete_one({"_id": session.id_sha256})


async def end_sessions_of_key(database: Database, *, key_id: str) -> int:
    """Sign out every browser signed in with a key (it was revoked)."""
    return (await _collection(database).delete_many({"key_id": key_id})).deleted_count


def csrf_matches(session: Session, token: str | None) -> bool:
    return token is not None and secrets.compare_digest(session.csrf.encode(), token.encode())

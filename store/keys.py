"""API keys: a token is shown once; only its SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from pymongo.errors import DuplicateKeyError

from store.documents import ApiKey, Role, utcnow
from store.errors import Conflict, NotFound

TOKEN_PREFIX = "sa_"  # noqa: S105 - a public prefix that marks our tokens, not a secret
# last_used_at is written at most this often per key, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_key(*, name: str, role: Role) -> tuple[ApiKey, str]:
    """A new key and its token (``sa_<8 chars>_<secret>``): the only time the token exists."""
    public = secrets.token_hex(4)
    token = f"{TOKEN_PREFIX}{public}_{secrets.token_urlsafe(32)}"
    key = ApiKey(name=name, role=role, token_sha256=token_sha256(token), prefix=token[:11])
    try:
        await key.insert()
    except DuplicateKeyError:
        raise Conflict(f"a key named {name!r} exists already") from None
    return key, token


async def key_for_token(token: str) -> ApiKey | None:
    """The live key a token belongs to. Looked up by hash: the token itself is never compared
    or stored, so there is no secret-dependent comparison to time."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    key = await ApiKey.find_one({"token_sha256": token_sha256(token), "revoked_at": None})
    if key is not None:
        await _touch(key)
    return key


async def _touch(key: ApiKey) -> None:
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        await ApiKey.get_pymongo_collection().update_one(
            {"_id": key.id}, {"$set": {"last_used_at": now}}
        )


async def list_keys() -> list[ApiKey]:
    return await ApiKey.find().sort("+created_at").to_list()


async def revoke_key(*, name: str) -> ApiKey:
    result = await ApiKey.get_pymongo_collection().find_one_and_update(
        {"name": name, "revoked_at": None}, {"$set": {"revoked_at": utcnow()}}
    )
    if result is None:
        raise NotFound(f"no live key named {name!r}")
    key: ApiKey = ApiKey.model_validate(result)
    return key


async def any_key_exists() -> bool:
    return await ApiKey.find_one() is not None

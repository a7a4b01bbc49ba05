"""How a purged account stays findable by its addresses without keeping them: keyed hashes.

A tombstone keeps no email address, yet mail that arrives later from one of them is the
purged customer's, and must go the way of the rest. So at the purge the tombstone keeps
``HMAC-SHA256(ARCHIVE_SECRET_KEY, address)`` of each (``Account.purged_addresses``), and
linking compares the hashes of a new message's addresses with them: the archive recognises an
address it was given again, and cannot list the addresses it forgot (without the key, the
hashes cannot even be tested against a guess).

The key is the archive's secret key, given once per process (``use_key``) by whoever opens
the database for the service; without it nothing is hashed and late mail is not recognised.
Changing the secret key forgets every tombstone's addresses.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable, Iterable

_key: Callable[[], bytes] | None = None


def use_key(key: bytes | Callable[[], bytes]) -> None:
    """The key the addresses are hashed with (the archive's ARCHIVE_SECRET_KEY), or how to
    get it when first needed (in development that writes the generated key: a command that
    hashes nothing must leave no file behind)."""
    global _key
    _key = functools.cache(key) if callable(key) else (lambda: key)


def address_hashes(addresses: Iterable[str]) -> list[str]:
    """The keyed hashes of ``addresses`` (lowercased), sorted; none without a key."""
    addresses = [a for a in addresses if a.strip()]
    if _key is None or not addresses:
        return []
    key = _key()
    return sorted({hmac.new(key, a.strip().lower().encode(), hashlib.sha256).hexdigest()
                   for a in addresses})  # fmt: skip


def person_id(addresses: Iterable[str]) -> str:
    """The account id an erasure of a person the archive knows only by these addresses
    files its content under (the same addresses, the same id)."""
    hashes = address_hashes(sorted({a.strip().lower() for a in addresses}))
    if not hashes:
        raise RuntimeError("no key to hash addresses with (store.subjects.use_key)")
    return "person-" + hashlib.sha256("|".join(hashes).encode()).hexdigest()[:24]

"""Exports: everything about one account (subject access), or what a hold covers (disclosure
to an authority), as a zip streamed to disk with a manifest of SHA-256 sums."""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from beanie import PydanticObjectId

from store.blobs import iter_blob
from store.documents import (
    Account,
    Conversation,
    Disclosure,
    Export,
    ExportStatus,
    Hold,
    Message,
    iso,
)
from store.errors import Conflict, NotFound

log = logging.getLogger("archive.export")

README = """This archive holds the support conversations {scope}, exported on {when}.

conversations.json  every conversation and its messages: times (UTC, ISO 8601), authors,
                    text, HTML, and the list of each message's attachments
eml/                the original bytes of every email, exactly as received (.eml files open
                    in any mail program)
attachments/        every attachment, under the name its sender gave it (made safe)
manifest.json       the SHA-256 and size of every file above; the export's own fingerprint is
                    the SHA-256 of manifest.json

Check a file: sha256sum eml/<conversation>/<message>.eml  (compare with manifest.json)
"""


@dataclass(frozen=True)
class Scope:
    """What an export covers: one account, or the scope of one hold."""

    account_id: str | None = None
    conversation_id: PydanticObjectId | None = None

    def describe(self) -> str:
        if self.account_id:
            return f"of account {self.account_id}"
        return f"of conversation {self.conversation_id}"


async def scope_of_hold(hold_id: PydanticObjectId) -> tuple[Hold, Scope]:
    hold = await Hold.get(hold_id)
    if hold is None:
        raise NotFound(f"no hold {hold_id}")
    return hold, Scope(account_id=hold.account_id, conversation_id=hold.conversation_id)


async def conversations_in(scope: Scope) -> AsyncIterator[Conversation]:
    query: dict[str, Any] = (
        {"account_id": scope.account_id} if scope.account_id else {"_id": scope.conversation_id}
    )
    async for conversation in Conversation.find(query).sort("+first_message_at"):
        yield conversation


async def count_messages(scope: Scope) -> int:
    if scope.account_id:
        return await Message.find({"account_id": scope.account_id}).count()
    return await Message.find({"conversation_id": scope.conversation_id}).count()


def safe_name(name: str | None, *, fallback: str, limit: int = 120) -> str:
    """One path segment that cannot leave its folder: no separators, no '..', no control
    characters, not empty, not too long (the extension is kept)."""
    text = unicodedata.normalize("NFC", name or "")
    text = "".join(c for c in text if unicodedata.category(c)[0] != "C")
    text = text.replace("/", "_").replace("\\", "_").replace(":", "_")
    text = text.strip().lstrip(".").strip() or fallback
    if len(text) > limit:
        stem, dot, ext = text.rpartition(".")
        text = (stem[: limit - len(ext) - 1] + dot + ext) if dot and len(ext) < 12 else text[:limit]
    return text


class _Hashing:
    """A writable file that hashes and counts what goes through it."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.target.write(data)
        self.sha256.update(data)
        self.size += len(data)


@dataclass
class Written:
    manifest_sha256: str
    size: int
    files: int


async def write_export(
    path: Path, scope: Scope, *, now: datetime, on_message: Callable[[], object] = lambda: None
) -> Written:
    """Write the zip at ``path`` entry by entry: nothing larger than one blob chunk or one
    conversation's JSON is ever held in memory."""
    manifest: dict[str, dict[str, object]] = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:

        async def entry(name: str, chunks: AsyncIterator[bytes], deflate: bool = False) -> None:
            # Blobs are stored as they are (attachments are mostly compressed already, and
            # deflating megabytes would stall the event loop); text is deflated.
            info = zipfile.ZipInfo(name, date_time=now.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            with archive.open(info, "w", force_zip64=True) as raw:
                sink = _Hashing(raw)
                async for chunk in chunks:
                    sink.write(chunk)
            manifest[name] = {"sha256": sink.sha256.hexdigest(), "size": sink.size}

        async def conversations_json() -> AsyncIterator[bytes]:
            yield b'{"conversations": [\n'
            first = True
            async for conversation in conversations_in(scope):
                messages = Message.find(Message.conversation_id == conversation.id).sort("+sent_at")
                documents = []
                async for message in messages:
                    documents.append(_message_json(message))
                    on_message()
                    await _files_of(message, entry)
                item = {**_conversation_json(conversation), "messages": documents}
                yield (b"" if first else b",\n") + json.dumps(item, ensure_ascii=False).encode()
                first = False
            yield b"\n]}\n"

        # conversations.json streams while the .eml and attachment entries of each message are
        # written; zipfile allows one open entry at a time, so the JSON goes to a spool first.
        spool = path.with_suffix(".json.part")
        with spool.open("wb") as out:
            async for piece in conversations_json():
                out.write(piece)
        await entry("conversations.json", _file_chunks(spool), deflate=True)
        spool.unlink()
        readme = README.format(scope=scope.describe(), when=now.isoformat()).encode()
        await entry("README.txt", _once(readme))
        body = json.dumps(
            {"created_at": now.isoformat(), "scope": scope.describe(), "files": manifest},
            indent=1, sort_keys=True,
        ).encode()  # fmt: skip
        archive.writestr("manifest.json", body)
    size = path.stat().st_size  # noqa: ASYNC240 - a local file, as the zip itself
    return Written(hashlib.sha256(body).hexdigest(), size, len(manifest) + 1)


async def _files_of(message: Message, entry: Callable[..., Any]) -> None:
    folder = f"{message.conversation_id}"
    if message.raw is not None:
        await entry(f"eml/{folder}/{message.id}.eml", iter_blob(message.raw.sha256))
    for n, attachment in enumerate(message.attachments):
        name = safe_name(attachment.filename, fallback=f"attachment-{n}")
        await entry(f"attachments/{message.id}/{n}-{name}", iter_blob(attachment.sha256))


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _file_chunks(path: Path, size: int = 1 << 20) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(size):
            yield chunk


def _conversation_json(c: Conversation) -> dict[str, Any]:
    return {
        "id": str(c.id), "channel": c.channel.value, "account_id": c.account_id,
        "source": c.source, "external_id": c.external_id, "subject": c.subject,
        "participants": c.participants, "first_message_at": iso(c.first_message_at),
        "last_message_at": iso(c.last_message_at),
    }  # fmt: skip


def _message_json(m: Message) -> dict[str, Any]:
    return {
        "id": str(m.id), "channel": m.channel.value, "direction": m.direction.value,
        "sent_at": iso(m.sent_at), "collected_at": iso(m.collected_at),
        "author": m.author.model_dump(), "to": [a.model_dump() for a in m.to],
        "cc": [a.model_dump() for a in m.cc], "subject": m.subject, "text": m.text,
        "html": m.html, "message_id_header": m.message_id_header, "parse_error": m.parse_error,
        "eml": f"eml/{m.conversation_id}/{m.id}.eml" if m.raw else None,
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type, "size": a.size,
             "sha256": a.sha256,
             "file": f"attachments/{m.id}/{n}-{safe_name(a.filename, fallback=f'attachment-{n}')}"}
            for n, a in enumerate(m.attachments)
        ],
        "history": [{"text": v.text, "replaced_at": iso(v.replaced_at)} for v in m.history],
    }  # fmt: skip


# --- export records and the disclosure register ---------------------------------------------


async def start_export(
    *,
    scope: Scope,
    account_id: str | None,
    hold_id: PydanticObjectId | None,
    created_by: str,
    now: datetime,
    max_age: timedelta,
) -> Export:
    """The export's record (running); the caller builds the file with ``build_export``.

    A purged account has nothing left to export: an export of it would only be a new place
    where its id lives, so it is refused."""
    if scope.account_id is not None:
        account = await Account.get(scope.account_id)
        if account is None:
            raise NotFound(f"no account {scope.account_id!r}")
        if account.purged_at is not None:
            raise Conflict(f"account {scope.account_id!r} was purged; nothing of it is left")
    export = Export(account_id=account_id or scope.account_id, hold_id=hold_id,
                    created_by=created_by, created_at=now, expires_at=now + max_age)  # fmt: skip
    await export.insert()
    return export


async def build_export(export: Export, scope: Scope, *, directory: Path, now: datetime) -> Export:
    path = directory / f"{export.id}.zip"
    try:
        written = await write_export(path, scope, now=now)
    except Exception as exc:
        log.exception("export %s failed", export.id)
        path.unlink(missing_ok=True)
        await _set(export, status=ExportStatus.FAILED, error=type(exc).__name__)
        raise
    await _set(export, status=ExportStatus.READY, path=str(path), size=written.size,
               manifest_sha256=written.manifest_sha256)  # fmt: skip
    await Disclosure.get_pymongo_collection().update_many(
        {"export_id": export.id}, {"$set": {"manifest_sha256": written.manifest_sha256}}
    )
    log.info("export %s ready: %d files, %d bytes", export.id, written.files, written.size)
    found = await Export.get(export.id)
    assert found is not None
    return found


async def _set(export: Export, **fields: Any) -> None:
    values = {k: v.value if isinstance(v, ExportStatus) else v for k, v in fields.items()}
    await Export.get_pymongo_collection().update_one({"_id": export.id}, {"$set": values})


async def register_disclosure(
    *,
    export: Export,
    hold: Hold,
    authority: str,
    legal_basis: str,
    disclosed_by: str,
    now: datetime,
) -> Disclosure:
    assert export.id is not None and hold.id is not None
    disclosure = Disclosure(export_id=export.id, hold_id=hold.id, case_ref=hold.case_ref,
                            authority=authority, legal_basis=legal_basis,
                            disclosed_by=disclosed_by, disclosed_at=now)  # fmt: skip
    await disclosure.insert()
    return disclosure


async def get_export(export_id: PydanticObjectId) -> Export:
    export = await Export.get(export_id)
    if export is None:
        raise NotFound(f"no export {export_id}")
    return export


async def remove_exports(query: dict[str, Any]) -> int:
    """Delete the files and records of the exports matching ``query``."""
    removed = 0
    async for export in Export.find(query):
        if export.path:
            Path(export.path).unlink(missing_ok=True)  # noqa: ASYNC240 - a local file
        await export.delete()
        removed += 1
    return removed


async def remove_expired_exports(*, now: datetime) -> int:
    return await remove_exports({"expires_at": {"$lte": now}})

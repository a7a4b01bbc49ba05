"""The corpus of real-world-shaped messages (tests/data/corpus, malformed ones included):
every one is accepted over SMTP and kept byte-identical; none is refused for its content."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from beanie import PydanticObjectId

from ingest.mime import SupportSide, parse_email
from store.blobs import read_blob
from store.documents import Blob, Message
from store.messages import NewEmail
from store.reading import filed_message
from store.spool import Spool
from tests.mail import queued_id, send, stored

CORPUS = sorted((Path(__file__).parent / "data" / "corpus").glob("*.eml"))


def on_the_wire(raw: bytes) -> bytes:
    """SMTP content ends with CRLF: a client adds one to a message that lacks it."""
    return raw if raw.endswith(b"\r\n") else raw + b"\r\n"


def test_the_corpus_has_at_least_40_messages_with_malformed_ones() -> None:
    assert len(CORPUS) >= 40
    assert sum("malformed" in path.name for path in CORPUS) >= 10


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
async def test_each_message_is_accepted_and_kept_byte_identical(smtp: int, path: Path) -> None:
    raw = path.read_bytes()
    code, reply = await send(smtp, raw)
    assert code == 250, reply
    message = await stored(reply)
    assert message.raw is not None
    assert await read_blob(message.raw.sha256) == on_the_wire(raw)


def parse(name: str) -> NewEmail:
    [path] = [p for p in CORPUS if p.stem.startswith(name)]
    return parse_email(path.read_bytes(), support=SUPPORT, received_at=datetime.now(UTC))


SUPPORT = SupportSide.parse(["@shop.example"])


@pytest.mark.parametrize(
    ("name", "noted"),
    [
        ("41-", "Date"),
        ("42-", "unknown encoding"),
        ("43-", "8-bit"),
        ("45-", "Base64"),
        ("46-", "CloseBoundaryNotFound"),
        ("47-", "NoBoundaryInMultipart"),
        ("56-", "MissingHeaderBodySeparator"),
    ],
)
def test_what_could_not_be_understood_is_noted(name: str, noted: str) -> None:
    error = parse(name).parse_error
    assert error is not None and noted in error


def test_unencoded_8bit_headers_are_read_as_the_sender_meant_them() -> None:
    assert parse("43-").subject == "Beställning 100595 – fel storlek, återbetalning?"


def test_a_message_without_message_id_is_deduplicated_by_its_bytes() -> None:
    assert parse("38-").dedup_key.startswith("email-sha256:")


def test_a_message_without_date_takes_its_arrival_time() -> None:
    email = parse("39-")
    assert email.sent_at == email.received_at


async def test_the_whole_corpus_stores_redeliveries_and_shared_attachments_once(
    smtp: int, spool: Spool
) -> None:
    replies = [await send(smtp, path.read_bytes()) for path in CORPUS]
    assert all(code == 250 for code, _ in replies)
    assert await spool.empty(within=30)
    # 37 is a redelivery of 01 (same Message-ID): acknowledged, and stored once, as 01.
    by_name = {
        path.stem: queued_id(reply) for path, (_, reply) in zip(CORPUS, replies, strict=True)
    }
    # Its 250 names the message already stored (01), whose id resolves.
    redelivery = PydanticObjectId(by_name["37-dup-message-id-redelivery-of-01"])
    assert str(redelivery) == by_name["01-plain-ascii"]
    original = await filed_message(redelivery)
    assert original is not None and original.id == redelivery
    assert await Message.count() == len(CORPUS) - 1
    # 08 and 10 carry the same PDF under two names: one blob.
    one = await Message.get(PydanticObjectId(by_name["08-mixed-pdf-attachment"]))
    two = await Message.get(PydanticObjectId(by_name["10-mixed-same-pdf-as-08-dedup"]))
    assert one is not None and two is not None
    pdf = {a.sha256 for a in one.attachments} & {a.sha256 for a in two.attachments}
    assert len(pdf) == 1
    assert await Blob.find({"_id": {"$in": list(pdf)}}).count() == 1
    # The thread 21 -> 22 -> 23 is one conversation.
    thread = [
        await Message.get(PydanticObjectId(by_name[name]))
        for name in ("21-thread-1-customer-initial", "22-thread-2-agent-reply",
                     "23-thread-3-customer-followup")
    ]  # fmt: skip
    assert len({m.conversation_id for m in thread if m is not None}) == 1

"""Fuzzing the MIME path: mutated real messages through the SMTP handler into a real mongod.
Never a 5xx for content, never a crash, always stored (and byte-exact)."""

from __future__ import annotations

import random
from pathlib import Path

from aiosmtpd.smtp import Envelope, Session
from beanie import PydanticObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.filer import Filer
from store.blobs import read_blob
from store.database import Database
from store.documents import Conversation, Message
from store.spool import Spool
from tests.conftest import report
from tests.mail import SUPPORT, handler, queued_id

CORPUS = [
    p.read_bytes() for p in sorted((Path(__file__).parent.parent / "data" / "corpus").glob("*.eml"))
]
SPECIAL = [
    b"\r\n",
    b"\n",
    b"\x00",
    b"\xff\xfe",
    b"=?",
    b"?=",
    b"--",
    b"boundary=",
    b":",
    b"<",
    b">",
    b"Content-Type: multipart/mixed; boundary=x\r\n",
    b"\r\n\r\n",
    b"=\r\n",
    b"\x1b[31m",
]
FUZZ_CASES = 250


def mutate(data: bytes, rng: random.Random) -> bytes:
    """``data`` with up to 8 random edits: bits flipped, bytes inserted or deleted, the end cut
    off, pieces of MIME syntax put in."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        at = rng.randint(0, len(out))
        action = rng.choice(["flip", "insert", "delete", "truncate", "special"])
        if action == "flip" and out:
            out[min(at, len(out) - 1)] ^= 1 << rng.randint(0, 7)
        elif action == "insert":
            out[at:at] = bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 64)))
        elif action == "delete":
            del out[at : at + rng.randint(1, 200)]
        elif action == "truncate":
            del out[at:]
        else:
            out[at:at] = rng.choice(SPECIAL)
    return bytes(out)


mutated = st.builds(mutate, st.sampled_from(CORPUS), st.randoms(use_true_random=False))


async def deliver(raw: bytes) -> str:
    session = Session(loop=None)  # type: ignore[arg-type]
    session.peer = ("127.0.0.1", 40000)
    envelope = Envelope()
    envelope.mail_from = "fuzz@example.com"
    envelope.rcpt_tos = ["support@shop.example"]
    envelope.original_content = raw
    envelope.content = raw
    spool = Spool()
    reply = str(await handler(spool).handle_DATA(None, session, envelope))  # type: ignore[arg-type]
    # File what was spooled right away, as the filer does behind the acknowledgement.
    while await Filer(spool, support=SUPPORT).file_once():
        pass
    return reply


@settings(
    max_examples=FUZZ_CASES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=mutated)
async def test_mutated_messages_are_always_stored_byte_exact(
    database: Database, raw: bytes
) -> None:
    # Each case starts empty: two mutants sharing a Message-ID are, by design, one message.
    await Message.get_pymongo_collection().delete_many({})
    await Conversation.get_pymongo_collection().delete_many({})
    reply = await deliver(raw)
    assert reply.startswith("250 "), reply
    message = await Message.get(PydanticObjectId(queued_id(reply)))
    assert message is not None and message.raw is not None
    assert await read_blob(message.raw.sha256) == raw


def test_the_fuzz_run_is_counted() -> None:
    report(f"fuzz cases run: {FUZZ_CASES} mutated messages from a corpus of {len(CORPUS)}")
    assert len(CORPUS) >= 40

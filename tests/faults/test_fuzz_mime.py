"""Fuzzing the MIME path: mutated real messages through the SMTP handler into a real mongod.
Never a 5xx for content, never a crash, always stored (and byte-exact)."""

from __future__ import annotations

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


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "special"]))
        if action == "flip" and data:
            data[min(at, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif action == "delete":
            del data[at : at + draw(st.integers(1, 200))]
        elif action == "truncate":
            del data[at:]
        else:
            data[at:at] = draw(st.sampled_from(SPECIAL))
    return bytes(data)


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
@given(raw=mutated())
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

"""CPython's own email test corpus (tests/data/cpython_email) over SMTP and back through the
API: every acknowledged id answers with its bytes, and a reused Message-ID loses nothing."""

from __future__ import annotations

import re
from pathlib import Path

from beanie import PydanticObjectId

from store.documents import Message, Role
from store.spool import Spool
from tests.conftest import Api
from tests.mail import queued_id, send

CORPUS = sorted((Path(__file__).parent / "data" / "cpython_email").glob("msg_*.txt"))
SHARED_ID = "15090.61304.110929.45684@aaa.zzz.org"
SHARING = {"msg_01", "msg_03", "msg_14", "msg_20", "msg_29"}


def on_the_wire(raw: bytes) -> bytes:
    """The bytes an SMTP client sends: CRLF line ends, a final CRLF."""
    crlf = re.sub(rb"\r?\n", b"\r\n", raw)
    return crlf if crlf.endswith(b"\r\n") else crlf + b"\r\n"


async def deliver_all(smtp: int) -> dict[str, str]:
    """Each file over SMTP; the id each 250 named, by file name."""
    ids = {}
    for path in CORPUS:
        code, reply = await send(smtp, on_the_wire(path.read_bytes()))
        assert code == 250, (path.name, reply)
        ids[path.stem] = queued_id(reply)
    return ids


def test_the_corpus_is_cpythons_48_messages() -> None:
    assert len(CORPUS) == 48


async def test_every_acknowledged_id_returns_its_message_byte_identical(
    smtp: int, spool: Spool, api: Api
) -> None:
    ids = await deliver_all(smtp)
    assert await spool.empty(within=60)
    for path in CORPUS:
        response = await api.get(f"/api/v1/messages/{ids[path.stem]}/raw", Role.COMPLIANCE)
        assert response.status == 200, path.name
        assert await response.read() == on_the_wire(path.read_bytes()), path.name
    assert await Message.count() == len(CORPUS)


async def test_five_messages_sharing_a_message_id_are_each_stored_and_marked(
    smtp: int, spool: Spool, api: Api
) -> None:
    ids = await deliver_all(smtp)
    assert await spool.empty(within=60)
    sharing = await Message.find({"message_id_header": SHARED_ID}).to_list()
    assert {str(m.id) for m in sharing} == {ids[name] for name in SHARING}
    assert all(m.shares_message_id for m in sharing)
    body = await (await api.get(f"/api/v1/messages/{ids['msg_01']}", Role.AGENT)).json()
    assert body["shares_message_id"] is True
    alone = await Message.get(PydanticObjectId(ids["msg_02"]))
    assert alone is not None and not alone.shares_message_id


async def test_a_retransmission_through_another_relay_is_stored_once_and_its_id_resolves(
    smtp: int, spool: Spool, api: Api
) -> None:
    original = on_the_wire((CORPUS[0]).read_bytes())
    relayed = (
        b"Received: from mx2.shop.example (mx2.shop.example [192.0.2.7])\r\n"
        b"\tby archive-relay.shop.example with ESMTP id 7F3A2\r\n"
        b"\tfor <support@shop.example>; Tue, 24 Nov 2026 09:00:00 +0000\r\n"
        b"Delivered-To: support@shop.example\r\n" + original
    )
    first = queued_id((await send(smtp, original))[1])
    assert await spool.empty(within=30)
    again = queued_id((await send(smtp, relayed))[1])
    assert again == first  # the 250 names the message already stored
    assert await spool.empty(within=30)
    assert [str(m.id) for m in await Message.find_all().to_list()] == [first]
    view = await (await api.get(f"/api/v1/messages/{again}", Role.AGENT)).json()
    assert view["id"] == first
    raw = await api.get(f"/api/v1/messages/{again}/raw", Role.AGENT)
    assert raw.status == 200
    assert await raw.read() == original  # the copy stored first

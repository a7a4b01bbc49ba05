"""SMTP protocol abuse: out-of-order commands, overlong lines, stalls, connection floods,
recipient floods, clients outside the allowlist. SMTP limits are set as MTAs set them: one
client must not be able to exhaust the server, and nothing half-sent is stored."""

from __future__ import annotations

import asyncio
import resource
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import aiosmtplib
import pytest

from ingest.smtp import ConnectionCaps
from store.database import Database
from store.documents import Message, SpoolEntry
from store.spool import Spool
from tests.helpers import eventually
from tests.mail import make_email, running, send, stored

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def server(*, idle: float = 30.0, per_client: int = 50) -> AsyncIterator[int]:
    async with running(Spool(), idle_timeout=idle, max_per_client=per_client) as port:
        yield port


async def connect(port: int, *, source: str = "127.0.0.1") -> Stream:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    return reader, writer


async def reply(reader: asyncio.StreamReader) -> str:
    """One (possibly multi-line) SMTP reply."""
    lines = []
    while True:
        line = (await asyncio.wait_for(reader.readline(), 10)).decode()
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return "".join(lines)


async def say(stream: Stream, command: str) -> str:
    reader, writer = stream
    writer.write(command.encode() + b"\r\n")
    await writer.drain()
    return await reply(reader)


async def greeted(port: int) -> Stream:
    stream = await connect(port)
    assert (await reply(stream[0])).startswith("220")
    assert (await say(stream, "EHLO client.example")).startswith("250")
    return stream


async def test_commands_out_of_order_are_refused_and_change_nothing(database: Database) -> None:
    async with server() as port:
        stream = await greeted(port)
        assert (await say(stream, "DATA")).startswith("503")
        assert (await say(stream, "RCPT TO:<support@shop.example>")).startswith("503")
        assert (await say(stream, "MAIL FROM:<ann@example.com>")).startswith("250")
        assert (await say(stream, "MAIL FROM:<ann@example.com>")).startswith("503")
        assert (await say(stream, "DATA")).startswith("503")  # no recipient yet
        assert (await say(stream, "QUIT")).startswith("221")
        stream[1].close()
    assert await Message.count() == 0


async def test_an_overlong_command_line_is_refused(database: Database) -> None:
    async with server() as port:
        stream = await greeted(port)
        at_most = "NOOP " + "a" * (1000 - len("NOOP ") - 2)  # 1,000 octets with its CRLF
        assert (await say(stream, at_most)).startswith("250")
        assert (await say(stream, at_most + "a")).startswith("500 5.5.2")
        assert (await say(stream, "MAIL FROM:<" + "a" * 2000 + "@example.com>")).startswith("500")
        assert (await say(stream, "NOOP")).startswith("250")  # the session goes on
        stream[1].close()


async def test_an_idle_client_is_disconnected(database: Database) -> None:
    async with server(idle=0.5) as port:
        reader, writer = await greeted(port)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # the server hung up
        writer.close()


async def test_a_data_that_never_ends_is_cut_off_and_nothing_is_stored(database: Database) -> None:
    async with server(idle=0.5) as port:
        stream = await greeted(port)
        await say(stream, "MAIL FROM:<ann@example.com>")
        await say(stream, "RCPT TO:<support@shop.example>")
        assert (await say(stream, "DATA")).startswith("354")
        stream[1].write(b"Subject: never ends\r\n\r\nfirst line\r\n")  # and then nothing
        await stream[1].drain()
        assert await asyncio.wait_for(stream[0].read(), 10) == b""  # the server hung up
        stream[1].close()
    assert await Message.count() == 0


@pytest.mark.parametrize("limit", [5])
async def test_one_client_cannot_hold_more_than_its_share_of_connections(
    database: Database, limit: int
) -> None:
    async with server(per_client=limit) as port:
        held = [await greeted(port) for _ in range(limit)]
        reader, writer = await connect(port)
        assert (await reply(reader)).startswith("421 4.7.0")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        held[0][1].close()
        await held[0][1].wait_closed()

        async def admitted() -> bool:
            stream = await connect(port)
            ok = (await reply(stream[0])).startswith("220")
            stream[1].close()
            return ok

        await eventually(admitted, timeout=10)
        for _, w in held[1:]:
            w.close()


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


async def test_a_client_outside_the_allowlist_is_refused_at_connect_with_554(
    spool: Spool,
) -> None:
    async with running(spool, allowed=["10.0.0.0/8"]) as port:
        reader, writer = await connect(port)
        assert (await reply(reader)).startswith("554 5.7.1")
        assert await asyncio.wait_for(reader.read(), 10) == b"", "the connection stays open"
        writer.close()
    assert await SpoolEntry.count() == 0


async def test_huge_command_lines_are_not_held_in_memory(spool: Spool) -> None:
    """Thirty sessions each send a 24 MB line without a line end: the server reads them away
    as they come (before: each session buffered the whole line, 720 MB here, never given
    back). The clients send from threads with blocking sockets, straight from one bytes
    object, so that what this process grows by is the server's."""
    line = b"NOOP " + b"x" * (24 * 1024 * 1024)
    async with running(spool, max_message_bytes=25 * 1024 * 1024) as port:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=30) as threads:

            def each(work: Callable[[Any], Any], items: Iterable[Any]) -> Any:
                return asyncio.gather(*(loop.run_in_executor(threads, work, i) for i in items))

            sockets = await each(lambda _: greeted_blocking(port), range(30))
            before = rss_bytes()
            await each(lambda s: s.sendall(line), sockets)
            grown = rss_bytes() - before
            replies = await each(lambda s: say_blocking(s, b""), sockets)
        for s in sockets:
            s.close()
    assert grown < 50 * 1024 * 1024, f"the server's memory grew by {grown / 2**20:.0f} MB"
    assert all(r.startswith("500 5.5.2") for r in replies)


def greeted_blocking(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    assert reply_blocking(sock).startswith("220")
    assert say_blocking(sock, b"EHLO client.example").startswith("250")
    return sock


def say_blocking(sock: socket.socket, command: bytes) -> str:
    sock.sendall(command + b"\r\n")
    return reply_blocking(sock)


def reply_blocking(sock: socket.socket) -> str:
    """One (possibly multi-line) SMTP reply, read a byte at a time (replies are short)."""
    lines, line = [], b""
    while True:
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError("the server closed the connection")
        line += byte
        if line.endswith(b"\n"):
            lines.append(line.decode())
            if len(line) < 4 or line[3:4] != b"-":
                return "".join(lines)
            line = b""


async def test_a_message_with_lines_longer_than_1000_octets_is_stored_whole(smtp: int) -> None:
    raw = (
        b"From: ann@example.com\r\nTo: support@shop.example\r\nSubject: long lines\r\n"
        b"Message-ID: <long-lines@example.com>\r\n\r\n" + b"word " * 2000 + b"\r\n"
    )
    code, queued = await send(smtp, raw)
    assert code == 250
    message = await stored(queued)
    assert message.raw is not None and message.raw.size == len(raw)
    assert message.text.count("word") == 2000


async def test_the_1001st_recipient_gets_452_and_the_mail_is_stored_for_the_first_1000(
    spool: Spool,
) -> None:
    recipients = [f"support+{n}@shop.example" for n in range(1001)]
    async with (
        running(spool) as port,
        aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client,
    ):
        refused, queued = await client.sendmail("ann@example.com", recipients, make_email())
    assert list(refused) == [recipients[-1]]
    assert refused[recipients[-1]].code == 452
    assert refused[recipients[-1]].message.startswith("4.5.3")
    message = await stored(queued)
    assert message.envelope is not None and message.envelope.rcpt_tos == recipients[:1000]


async def test_connections_are_capped_per_network_and_in_all(spool: Spool) -> None:
    """Distinct addresses of one /24 share its cap (a host holding many addresses counts
    once); past the total cap, no network gets in."""
    async with running(spool, max_per_client=2, max_per_network=3, max_connections=4) as port:
        held: list[Stream] = []

        async def banner(source: str) -> str:
            held.append(await connect(port, source=source))
            return (await reply(held[-1][0]))[:3]

        one = [await banner("127.0.0.2") for _ in range(3)]
        network = [await banner(f"127.0.0.{n}") for n in (3, 4)]
        other = [await banner(f"127.0.1.{n}") for n in (1, 2)]
        for _, writer in held:
            writer.close()
    assert one == ["220", "220", "421"]  # the client's cap
    assert network == ["220", "421"]  # the /24's
    assert other == ["220", "421"]  # the total


def test_closed_sessions_leave_no_count_behind() -> None:
    """A stream of distinct client addresses costs memory only while their sessions are open."""
    caps = ConnectionCaps(per_client=5, per_network=10_000, total=10_000)
    addresses = [f"10.{n // 65536}.{n // 256 % 256}.{n % 256}" for n in range(2000)]
    assert all(caps.admit(address) is None for address in addresses)
    assert caps.admit("10.0.0.1") is None and caps.admit("10.0.0.1") is None
    for address in [*addresses, "10.0.0.1", "10.0.0.1"]:
        caps.release(address)
    assert len(caps._open) == 0

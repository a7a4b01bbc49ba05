"""SMTP protocol abuse: out-of-order commands, overlong lines, stalls, connection floods.
One client must not be able to exhaust the server, and nothing half-sent is stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from store.database import Database
from store.documents import Message
from store.spool import Spool
from tests.helpers import eventually
from tests.mail import running

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def server(*, idle: float = 30.0, per_client: int = 50) -> AsyncIterator[int]:
    async with running(Spool(), idle_timeout=idle, max_per_client=per_client) as port:
        yield port


async def connect(port: int) -> Stream:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
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

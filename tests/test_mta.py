"""The archive as the target of a real MTA client: swaks (Debian package, `make tools`)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from store.blobs import read_blob
from tests.mail import make_email, stored

SWAKS = shutil.which("swaks")
# `make test` installs swaks first (`make tools`); only a machine where that was impossible
# (no root, no apt) runs without it, and then this file says so instead of passing silently.
pytestmark = pytest.mark.skipif(SWAKS is None, reason="swaks is not installed (make tools)")


async def swaks(*args: str) -> str:
    assert SWAKS is not None
    process = await asyncio.create_subprocess_exec(
        SWAKS, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, out.decode()
    return out.decode()


async def test_a_message_sent_by_swaks_is_stored_byte_exact(smtp: int, tmp_path: Path) -> None:
    raw = make_email(message_id="<swaks-1@example.com>")
    eml = tmp_path / "message.eml"
    eml.write_bytes(raw)
    transcript = await swaks(
        "--server", "127.0.0.1", "--port", str(smtp), "--helo", "mx.shop.example",
        "--from", "ann@example.com", "--to", "support@shop.example", "--data", str(eml),
    )  # fmt: skip
    reply = next(line for line in transcript.splitlines() if "queued as" in line)
    message = await stored(reply)
    assert message.raw is not None
    # swaks ends DATA with a CRLF of its own after the file's last line: those are the bytes
    # it sent, and the archive keeps exactly them.
    assert await read_blob(message.raw.sha256) == raw + b"\r\n"
    assert message.envelope is not None and message.envelope.helo == "mx.shop.example"


async def test_swaks_with_an_attachment_yields_an_attachment(smtp: int, tmp_path: Path) -> None:
    invoice = tmp_path / "invoice.pdf"
    invoice.write_bytes(b"%PDF-1.4 " + bytes(range(256)) * 20)
    transcript = await swaks(
        "--server", "127.0.0.1", "--port", str(smtp), "--from", "ann@example.com",
        "--to", "support@shop.example", "--header", "Subject: invoice attached",
        "--attach-type", "application/pdf", "--attach-name", "invoice.pdf",
        "--attach", f"@{invoice}",
    )  # fmt: skip
    reply = next(line for line in transcript.splitlines() if "queued as" in line)
    message = await stored(reply)
    [attachment] = message.attachments
    assert attachment.filename == "invoice.pdf"
    assert await read_blob(attachment.sha256) == invoice.read_bytes()

"""Ceiling servers, each the fastest a part of the archive could be here, run as processes:

python -m bench.ceilings smtp PORT     aiosmtpd whose handler only answers 250
python -m bench.ceilings chat PORT     aiohttp that verifies the signature, parses the
                                       JSON and answers 200
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP

from ingest.chat.signature import verify
from store.documents import utcnow

SECRET = b"bench-secret-0123456789"


class NullHandler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 Ok: queued"


async def smtp(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(NullHandler(), data_size_limit=26_214_400, decode_data=False),
        "127.0.0.1", port,
    )  # fmt: skip
    async with server:
        await server.serve_forever()


async def chat_handler(request: web.Request) -> web.Response:
    body = await request.read()
    headers = request.headers
    verify(secret=SECRET, timestamp=headers.get("X-Archive-Timestamp"),
           signature=headers.get("X-Archive-Signature"), body=body, now=utcnow())  # fmt: skip
    json.loads(body)
    return web.json_response({"ok": True})


def chat(port: int) -> None:
    app = web.Application(client_max_size=10 * 1024 * 1024)
    app.router.add_post("/webhooks/chat/{source}", chat_handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "smtp":
        asyncio.run(smtp(port))
    else:
        chat(port)

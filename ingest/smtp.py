"""The SMTP server: aiosmtpd on the service's event loop. A message is acknowledged once it is
durably in the spool (one group-committed write); the filer parses and files it behind."""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from prometheus_client import Counter, Histogram

from ingest.mime import dedup_key
from store.documents import Envelope, utcnow
from store.errors import is_transient
from store.spool import Spool, SpoolFull

log = logging.getLogger("archive.smtp")

SMTP_MESSAGES = Counter(
    "archive_smtp_messages_total", "SMTP messages by outcome", ["outcome"]
)  # accepted, rejected, tempfail
SMTP_STORE_SECONDS = Histogram(
    "archive_smtp_store_seconds", "Time from end of DATA to the durable reply"
)

TEMPFAIL = "451 4.3.0 Temporary failure storing the message, please retry"
NOT_ALLOWED = "550 5.7.1 Client host rejected: not allowed to relay mail to this archive"
TOO_BIG = "552 5.3.4 Message too big for this archive"
SPOOL_FULL = "451 4.3.1 Archive queue full, please retry later"
TOO_MANY = b"421 4.7.0 Too many connections from your address, try again later\r\n"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
LINE_TOO_LONG = "500 5.5.2 Line too long (at most 1,000 octets, RFC 5321 4.5.3.1)"
REFUSED_AT_CONNECT = (
    b"554 5.7.1 Client host rejected: not allowed to relay mail to this archive\r\n"
)

# RFC 5321 4.5.3.1: a text line is at most 1,000 octets with its CRLF, and no command here
# may be longer. A longer one is answered 500 without being held: outside DATA the reader
# keeps at most _READER_LIMIT of a line and reads the rest away as it comes (a message's own
# lines may be longer: see smtp_DATA).
COMMAND_LINE_LIMIT = 1000
_READER_LIMIT = 2 * COMMAND_LINE_LIMIT

# Messages up to this size are hashed on the loop (well under a millisecond).
HASH_INLINE_MAX = 256 * 1024

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(cidrs: Sequence[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


class ArchiveHandler:
    """aiosmtpd handler: checks the client, and puts each message durably in the spool before
    the 250 (whose queue id is the id the message will be stored under)."""

    def __init__(
        self,
        *,
        spool: Spool,
        allowed_clients: Sequence[IPNetwork],
        max_recipients: int = 1000,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._spool = spool
        self._allowed = list(allowed_clients)
        self._max_recipients = max_recipients
        self._clock = clock
        self._in_flight = 0
        self._drained = asyncio.Event()
        self._drained.set()

    def allows(self, peer: Any) -> bool:
        try:
            address = ipaddress.ip_address(peer[0].split("%")[0])
        except (TypeError, ValueError, IndexError):
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self._allowed)

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: SmtpEnvelope,
        address: str,
        options: list[str],
    ) -> str:
        if not self.allows(session.peer):
            log.warning("refused mail from %s: not in ARCHIVE_SMTP_ALLOWED_CLIENTS", session.peer)
            SMTP_MESSAGES.labels("rejected").inc()
            return NOT_ALLOWED
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: SmtpEnvelope,
        address: str,
        options: list[str],
    ) -> str:
        if not self.allows(session.peer):
            return NOT_ALLOWED
        if len(envelope.rcpt_tos) >= self._max_recipients:
            # 452, not 5xx: RFC 5321 4.5.3.1.10, the client sends the rest in another
            # transaction, and the message is stored for the recipients accepted so far.
            return TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        started = time.perf_counter()
        self._in_flight += 1
        self._drained.clear()
        try:
            return await self._store(session, envelope)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._drained.set()
            SMTP_STORE_SECONDS.observe(time.perf_counter() - started)

    async def _store(self, session: Session, envelope: SmtpEnvelope) -> str:
        raw = envelope.original_content or b""
        smtp_envelope = Envelope(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            client_address=str(session.peer[0]) if session.peer else "",
            helo=session.host_name,
            tls=session.ssl is not None,
        )
        try:
            queued = await self._spool.put_email(
                raw, envelope=smtp_envelope, received_at=self._clock(),
                dedup_key=await _dedup_key(raw),
            )  # fmt: skip
        except SpoolFull as exc:
            log.warning("spool full, answered 451 to %s: %s", session.peer, exc)
            SMTP_MESSAGES.labels("tempfail").inc()
            return SPOOL_FULL
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("database unavailable, answered 451 to %s: %s", session.peer, exc)
            SMTP_MESSAGES.labels("tempfail").inc()
            return TEMPFAIL
        SMTP_MESSAGES.labels("accepted").inc()
        log.debug("accepted %s from %s (%d bytes)", queued, session.peer, len(raw))
        return f"250 2.0.0 Ok: queued as {queued}"

    async def handle_exception(self, error: Exception) -> str:
        log.exception("SMTP session failed; answered 451 so the sender retries", exc_info=error)
        SMTP_MESSAGES.labels("tempfail").inc()
        return TEMPFAIL

    async def drained(self, *, within: float) -> bool:
        """Wait until no message is being stored (or ``within`` seconds pass)."""
        try:
            await asyncio.wait_for(self._drained.wait(), within)
            return True
        except TimeoutError:
            return False


async def _dedup_key(raw: bytes) -> str:
    """The message's content key (a retransmission's is the stored message's); hashing a
    large message runs in a thread, so that the loop keeps serving other sessions."""
    if len(raw) <= HASH_INLINE_MAX:
        return dedup_key(raw)
    return await asyncio.to_thread(dedup_key, raw)


class ConnectionCaps:
    """How many SMTP sessions may be open at once: per client address, per network (its /24,
    or /64 for IPv6: one host holding many addresses counts once) and in all, so that a flood
    of idle connections cannot take the server from the mail servers that feed it."""

    def __init__(self, *, per_client: int, per_network: int, total: int) -> None:
        self._limits = {"client": per_client, "network": per_network, "total": total}
        # Only open sessions are counted: a key whose count falls to 0 goes (a stream of
        # distinct addresses costs nothing once their sessions closed).
        self._open: collections.Counter[tuple[str, str]] = collections.Counter()

    def admit(self, address: str) -> str | None:
        """Count a new session from ``address``; or, when a cap is full, which one (for the
        log: a kind, not the address) and count nothing."""
        keys = _keys(address)
        full = next((k[0] for k in keys if self._open[k] >= self._limits[k[0]]), None)
        if full is None:
            self._open.update(keys)
        return full

    def release(self, address: str) -> None:
        for key in _keys(address):
            self._open[key] -= 1
            if self._open[key] <= 0:
                del self._open[key]


def _keys(address: str) -> list[tuple[str, str]]:
    return [("client", address), ("network", _network_of(address)), ("total", "")]


def _network_of(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class ArchiveSMTP(SMTP):
    """aiosmtpd's SMTP with RFC 3463 enhanced codes on its errors, clients outside the
    allowlist refused before the banner, command lines bounded by RFC 5321, and a message's
    own lines as long as its size allows: a message is never refused for its content."""

    _REWORDED = {
        "552 Error: Too much mail data": TOO_BIG,
        "552 Error: message size exceeds fixed maximum message size": TOO_BIG,
        "500 Command line too long": LINE_TOO_LONG,
    }

    def __init__(
        self,
        handler: ArchiveHandler,
        *,
        max_message_bytes: int,
        caps: ConnectionCaps,
        **kwargs: Any,
    ) -> None:
        # The reader's limit is the most it holds of a line before answering 500: a command's
        # outside DATA (with room for MAIL's extension parameters), a message's inside DATA.
        self.line_length_limit = _READER_LIMIT
        self._data_line_limit = max_message_bytes + 2
        self._handler = handler
        self._caps = caps
        self._client: str | None = None  # the address counted in ``caps`` while open
        super().__init__(
            handler,
            data_size_limit=max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            ident="Support Archive ESMTP",
            **kwargs,
        )
        # aiosmtpd allows 512 octets (and keeps its per-command limits on the class, shared by
        # every session): here each session has its own, 1,000 with the CRLF, plus what
        # aiosmtpd adds to MAIL for each extension it announces.
        self.command_size_limit = COMMAND_LINE_LIMIT - 2
        self.command_size_limits = collections.defaultdict(lambda: COMMAND_LINE_LIMIT - 2)

    async def push(self, status: str) -> None:  # type: ignore[override]
        await super().push(self._REWORDED.get(status, status))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if peer else "?"
        assert isinstance(transport, asyncio.WriteTransport)
        if not self._handler.allows(peer):
            # Before the banner: a client that may not send mail cannot send anything.
            log.warning("refused a connection: client not in ARCHIVE_SMTP_ALLOWED_CLIENTS")
            SMTP_MESSAGES.labels("rejected").inc()
            transport.write(REFUSED_AT_CONNECT)
            transport.close()
            return
        if full := self._caps.admit(client):
            log.warning("refused a connection: the %s connection cap is reached", full)
            transport.write(TOO_MANY)
            transport.close()
            return
        self._client = client
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._client is not None:
            self._caps.release(self._client)
            self._client = None
            super().connection_lost(error)

    async def smtp_DATA(self, arg: str) -> None:
        # A message's lines are as long as its size allows (mail with long lines is common);
        # only a client that passed MAIL and RCPT gets here, and DATA is bounded by its size.
        self._reader._limit = self.line_length_limit = self._data_line_limit  # type: ignore[attr-defined]
        try:
            await super().smtp_DATA(arg)
        finally:
            self._reader._limit = self.line_length_limit = _READER_LIMIT  # type: ignore[attr-defined]


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@asynccontextmanager
async def smtp_server(
    handler: ArchiveHandler,
    *,
    host: str,
    port: int,
    max_message_bytes: int,
    tls: ssl.SSLContext | None = None,
    idle_timeout: float = 300.0,
    max_per_client: int = 50,
    max_per_network: int = 200,
    max_connections: int = 1000,
    shutdown_grace: float = 30.0,
) -> AsyncIterator[asyncio.Server]:
    """Serve SMTP on the running loop; on exit stop accepting, let messages being stored
    finish, then close the remaining sessions."""
    sessions: weakref.WeakSet[ArchiveSMTP] = weakref.WeakSet()
    caps = ConnectionCaps(per_client=max_per_client, per_network=max_per_network,
                          total=max_connections)  # fmt: skip

    def new_session() -> ArchiveSMTP:
        session = ArchiveSMTP(
            handler, max_message_bytes=max_message_bytes, tls_context=tls, timeout=idle_timeout,
            caps=caps,
        )  # fmt: skip
        sessions.add(session)
        return session

    server = await asyncio.get_running_loop().create_server(new_session, host, port)
    names = ", ".join(_address(s.getsockname()) for s in server.sockets)
    log.info("SMTP listening on %s%s", names, " (STARTTLS)" if tls else "")
    try:
        yield server
    finally:
        server.close()
        if not await handler.drained(within=shutdown_grace):
            log.warning("messages still being stored after %.0fs; closing anyway", shutdown_grace)
        for session in list(sessions):
            if session.transport is not None:
                session.transport.close()
        await server.wait_closed()
        log.info("SMTP stopped")


def _address(sockname: Any) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

"""MIME parsing: raw email bytes to what the store files. Never raises for content: whatever
cannot be understood is noted in ``parse_error`` and the raw bytes are kept as they are."""

from __future__ import annotations

import email
import email.utils
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage, Message
from html import unescape

from ingest.attachment_text import searchable_text
from store.blobs import NewAttachment
from store.documents import Address, Author, AuthorRole, Direction, Envelope, at_millis
from store.messages import NewEmail

_MSGID = re.compile(r"<([^<>\s]+)>")
_SURROGATE = re.compile("[\udc80-\udcff]")

# Header fields that relays add on the way (RFC 5321 trace fields, and those that record a
# relay's checks): a retransmission through other hops differs in these only.
TRACE_FIELDS = frozenset({
    b"received", b"return-path", b"delivered-to", b"x-original-to",
    b"x-received", b"received-spf", b"authentication-results",
    b"arc-seal", b"arc-message-signature", b"arc-authentication-results",
})  # fmt: skip
_FIELD_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")
# Dates before this are a reset clock, not the time a support mail was received; a relay's
# clock may run this much ahead of ours, beyond it a time is in the future.
EARLIEST_PLAUSIBLE = datetime(1990, 1, 1, tzinfo=UTC)
CLOCK_SKEW = timedelta(days=1)


@dataclass(frozen=True)
class SupportSide:
    """Which addresses are the company's support side (``ARCHIVE_SUPPORT_ADDRESSES``):
    full addresses, or domains written ``@example.com`` or ``example.com``."""

    addresses: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: list[str]) -> SupportSide:
        addresses, domains = set(), set()
        for entry in (e.strip().lower() for e in entries if e.strip()):
            if "@" in entry.lstrip("@"):
                addresses.add(entry)
            else:
                domains.add(entry.lstrip("@"))
        return cls(frozenset(addresses), frozenset(domains))

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        address = address.lower()
        return address in self.addresses or address.rpartition("@")[2] in self.domains


def parse_email(
    raw: bytes,
    *,
    support: SupportSide,
    received_at: datetime,
    envelope: Envelope | None = None,
    source: str = "smtp",
    attachment_text: bool = True,
) -> NewEmail:
    """What the store needs to file ``raw``; best effort for anything broken. Never raises:
    whatever the parser trips on, the raw bytes are filed with the error noted. Without
    ``attachment_text``, the attachments' text is left for the caller to extract."""
    try:
        return _parse(raw, support=support, received_at=received_at, envelope=envelope,
                      source=source, attachment_text=attachment_text)  # fmt: skip
    except Exception as exc:
        return raw_only_email(raw, error=f"unparseable: {exc!r}"[:500], received_at=received_at,
                              envelope=envelope, support=support, source=source)  # fmt: skip


def _parse(
    raw: bytes,
    *,
    support: SupportSide,
    received_at: datetime,
    envelope: Envelope | None,
    source: str,
    attachment_text: bool,
) -> NewEmail:
    problems: list[str] = []
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)

    problems += [type(d).__name__ for d in msg.defects]
    sender = _first(_addresses(msg, "From", problems))
    to = _addresses(msg, "To", problems)
    cc = _addresses(msg, "Cc", problems)
    if sender is None and envelope is not None and envelope.mail_from:
        sender = Address(email=envelope.mail_from.lower())
    outbound = sender is not None and sender.email in support
    parties = [a.email for a in (sender, *to, *cc) if a is not None and a.email]
    customers = [a for a in parties if a not in support]
    if not outbound:
        customers = [sender.email] if sender is not None and sender.email else customers[:1]
    message_id = _msgid(_header(msg, "Message-ID", problems))
    text, html, attachments = _body(msg, problems)
    sent_at = _date(msg, problems)
    return NewEmail(
        raw=raw,
        dedup_key=dedup_key(raw),
        received_at=received_at,
        collected_at=first_received(msg, date=sent_at, arrived=received_at),
        sent_at=sent_at or received_at,
        direction=Direction.OUTBOUND if outbound else Direction.INBOUND,
        author=Author(
            role=AuthorRole.AGENT if outbound else AuthorRole.CUSTOMER,
            email=sender.email if sender else None,
            name=sender.name if sender else None,
        ),
        envelope=envelope,
        source=source,
        message_id=message_id,
        in_reply_to=_msgid(_header(msg, "In-Reply-To", problems)),
        references=_MSGID.findall(_header(msg, "References", problems) or ""),
        subject=_header(msg, "Subject", problems),
        sender=sender,
        to=to,
        cc=cc,
        participants=sorted(set(parties)),
        customer_emails=sorted(set(customers)),
        text=text,
        html=html,
        attachments=attachments,
        attachment_text=searchable_text(attachments) if attachment_text else "",
        parse_error="; ".join(dict.fromkeys(problems)) or None,
    )


def raw_only_email(
    raw: bytes | None,
    *,
    error: str,
    received_at: datetime,
    envelope: Envelope | None,
    support: SupportSide,
    source: str = "smtp",
    dedup: str | None = None,
) -> NewEmail:
    """What the store files of a delivery that could not be parsed or filed: its bytes, the
    error, and its envelope, whose addresses make it searchable and link it to an account."""
    sender = envelope.mail_from.lower() if envelope and envelope.mail_from else None
    recipients = [r.lower() for r in envelope.rcpt_tos] if envelope else []
    outbound = sender is not None and sender in support
    parties = [a for a in dict.fromkeys([sender, *recipients]) if a]
    customers = [a for a in parties if a not in support]
    if not outbound:
        customers = [sender] if sender else customers[:1]
    return NewEmail(
        raw=raw,
        dedup_key=dedup or dedup_key(raw or b""),
        received_at=received_at,
        sent_at=received_at,
        direction=Direction.OUTBOUND if outbound else Direction.INBOUND,
        author=Author(role=AuthorRole.AGENT if outbound else AuthorRole.CUSTOMER, email=sender),
        envelope=envelope,
        source=source,
        customer_emails=sorted(set(customers)),
        participants=sorted(set(parties)),
        parse_error=error,
    )


def dedup_key(raw: bytes) -> str:
    """An email's identity: the same Message-ID with the same content (the Message-ID header
    is part of the content) is one message however many relays carried it."""
    return f"email-sha256:{content_sha256(raw)}"


def content_sha256(raw: bytes) -> str:
    """SHA-256 of ``raw`` without its trace header fields (``TRACE_FIELDS``, with their folded
    continuation lines) and with CRLF read as LF and trailing line ends dropped, so that hops,
    mailbox files and SMTP's final CRLF do not make a message another."""
    digest = hashlib.sha256()
    body = 0
    for line in _header_lines(raw):
        body += len(line)
        name = _FIELD_NAME.match(line)
        if name is not None and name[1].lower() in TRACE_FIELDS:
            continue
        digest.update(_lf(line))
    digest.update(_lf(raw[body:]).rstrip(b"\n"))
    return digest.hexdigest()


def _header_lines(raw: bytes) -> Iterator[bytes]:
    """The header fields of ``raw``, each with its continuation lines, up to the first line
    that is neither (the empty line before the body, or a body without one)."""
    start = 0
    while start < len(raw):
        end = _line_end(raw, start)
        if not _FIELD_NAME.match(raw, start, end):
            return
        while end < len(raw) and raw[end : end + 1] in (b" ", b"\t"):  # folded: one field
            end = _line_end(raw, end)
        yield raw[start:end]
        start = end


def _line_end(raw: bytes, start: int) -> int:
    end = raw.find(b"\n", start)
    return len(raw) if end < 0 else end + 1


def _lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def first_received(msg: EmailMessage, *, date: datetime | None, arrived: datetime) -> datetime:
    """When the company first received ``msg``: the earliest plausible time of its Received
    fields (each relay's own clock), else its Date (the sender's), never later than
    ``arrived``. Unreadable times, times before 1990 and times in the future (beyond a day of
    clock skew) are ignored."""

    def plausible(when: datetime) -> bool:
        return EARLIEST_PLAUSIBLE <= when <= arrived + CLOCK_SKEW

    received = [t for t in _received_times(msg) if plausible(t)]
    if received:
        return min(*received, arrived)
    if date is not None and plausible(date):
        return min(date, arrived)
    return arrived


def _received_times(msg: EmailMessage) -> Iterable[datetime]:
    for name, value in msg.raw_items():
        if name.lower() != "received":
            continue
        stamp = " ".join(str(value).rpartition(";")[2].split())
        try:
            when = email.utils.parsedate_to_datetime(stamp)
        except (TypeError, ValueError, IndexError, OverflowError):
            continue
        yield at_millis(when)


def clean(text: str) -> str:
    """A string MongoDB can store: undecodable 8-bit bytes (surrogate escapes) read as UTF-8
    if they are, else as Windows-1252, the usual culprit."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogateescape")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("cp1252", "replace")


def _header(msg: EmailMessage, name: str, problems: list[str]) -> str | None:
    raw_value = _raw_header(msg, name)
    if raw_value is None:
        return None
    if _SURROGATE.search(raw_value):
        # Unencoded 8-bit bytes, which the parser would replace with U+FFFD: decode them.
        problems.append(f"{name}: 8-bit bytes without encoding")
        text = raw_value
    else:
        try:
            text = header_text(msg, name, raw_value)
        except Exception as exc:  # the header parser fails on some garbage (e.g. IndexError)
            problems.append(f"{name}: {exc!r}")
            text = raw_value
    return " ".join(clean(text).split()) or None


def header_text(msg: EmailMessage, name: str, raw_value: str) -> str:
    """The text of ``msg``'s first ``name`` header (Subject, Message-ID, In-Reply-To,
    References: unstructured or message-id), as ``str(msg.get(name))`` reads it, given its raw
    value. Plain ASCII without an encoded word reads as itself, unfolded; only anything else
    builds the email package's header object (a third of a parse's time went there, on
    headers that are almost always plain: tests/test_mime_fast_paths.py holds the two equal)."""
    plain = raw_value.isascii() and "=?" not in raw_value
    # A Message-ID header object drops what follows the id: only the plain form reads as is.
    if plain and (name.lower() != "message-id" or _PLAIN_MSGID.fullmatch(raw_value)):
        return "".join(_LINE_BREAKS.split(raw_value))
    return str(msg.get(name))


def _raw_header(msg: EmailMessage, name: str) -> str | None:
    return next((str(v) for k, v in msg.raw_items() if k.lower() == name.lower()), None)


def _msgid(value: str | None) -> str | None:
    if not value:
        return None
    found = _MSGID.search(value)
    ident = found[1] if found else value.strip().strip("<>")
    return ident or None


# Most mail names its parties plainly: "Ann Example <ann@example.com>, <bob@example.org>". Those
# are read with one regular expression; anything else (quotes, comments, encoded words, groups,
# folding, obsolete forms) goes through the email package's full header parser, which builds a
# header class per call and was most of the time spent parsing (tests/test_mime_fast_paths.py
# holds the two equal on every value the plain form accepts).
_ATEXT = r"A-Za-z0-9!#$%&'*+/?^_`{|}~-"  # RFC 5322 atext but "="
_ATOM = rf"[{_ATEXT}]+"  # without "=": no encoded word slips through
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_ADDR_SPEC = rf"{_DOT_ATOM}@{_DOT_ATOM}"
_PLAIN_ADDRESS = re.compile(
    rf"[ \t]*(?:(?:({_ATOM}(?: {_ATOM})*)[ \t]*)?<({_ADDR_SPEC})>|({_ADDR_SPEC}))[ \t]*"
)
_LINE_BREAKS = re.compile(r"\n|\r")  # as email.policy unfolds a header before parsing it
_ID_ATOM = rf"[={_ATEXT}]+"  # all of atext: header_text rules out "=?" before
_ID_DOT_ATOM = rf"{_ID_ATOM}(?:\.{_ID_ATOM})*"
_PLAIN_MSGID = re.compile(rf"[ \t]*<{_ID_DOT_ATOM}@{_ID_DOT_ATOM}>[ \t]*")


def plain_addresses(value: str) -> list[tuple[str, str]] | None:
    """(display name, address) of each party of an address header in the plain form, or
    None when the value is anything else (then only the full parser may read it)."""
    pairs = []
    for item in value.split(","):
        found = _PLAIN_ADDRESS.fullmatch(item)
        if found is None:
            return None
        display, bracketed, bare = found.groups()
        pairs.append((display or "", bracketed or bare))
    return pairs


def _addresses(msg: EmailMessage, name: str, problems: list[str]) -> list[Address]:
    raw_values = [str(v) for k, v in msg.raw_items() if k.lower() == name.lower()]
    result = []
    for value in raw_values:
        pairs = plain_addresses(value)
        if pairs is None:
            try:
                parsed = msg.policy.header_factory(name, value)  # type: ignore[attr-defined]
                pairs = [(a.display_name, a.addr_spec) for a in parsed.addresses]
            except Exception:  # the strict parser could not read it: fall back to the lenient
                problems.append(f"{name}: unreadable address")
                pairs = email.utils.getaddresses([clean(value)])
        for display, addr in pairs:
            addr = clean(addr).strip().lower()
            if addr and "@" in addr:
                result.append(Address(email=addr, name=clean(display).strip() or None))
    return result


def _first(addresses: list[Address]) -> Address | None:
    return addresses[0] if addresses else None


def _date(msg: EmailMessage, problems: list[str]) -> datetime | None:
    raw = _raw_header(msg, "Date")
    if raw is None:
        return None
    when = header_date(raw)
    if when is None:
        problems.append("Date: unreadable")
    return at_millis(when) if when is not None else None


def header_date(raw: str) -> datetime | None:
    """The moment a Date header's value names, as ``msg.get("Date").datetime`` reads it (the
    same unfolding and the same date parser), without building a header object; None when it
    names none."""
    value = "".join(_LINE_BREAKS.split(raw))
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value)
    except Exception:  # ValueError for what is not a date; anything else is unreadable too
        return None


# --- bodies and attachments ---------------------------------------------------------------


def _body(msg: EmailMessage, problems: list[str]) -> tuple[str, str | None, list[NewAttachment]]:
    plain = _safe_body(msg, "plain")
    html_part = _safe_body(msg, "html")
    html = _text_of(html_part, problems) if html_part is not None else None
    text = _text_of(plain, problems) if plain is not None else None
    if text is None and html is not None:
        text = html_to_text(html)
    attachments = []
    for part in _leaves(msg):
        problems += [type(d).__name__ for d in part.defects if part is not msg]
        if part is plain or part is html_part:
            continue
        attachment = _attachment(part, problems)
        if attachment is not None:
            attachments.append(attachment)
    return text or "", html, attachments


def _safe_body(msg: EmailMessage, kind: str) -> EmailMessage | None:
    try:
        part = msg.get_body(preferencelist=(kind,))
    except Exception:
        return None
    return part if isinstance(part, EmailMessage) else None


def _leaves(part: Message) -> Iterator[EmailMessage]:
    """Every leaf part; an attached email (message/rfc822) counts as one leaf, not its parts."""
    if part.get_content_type() == "message/rfc822" or not part.is_multipart():
        if isinstance(part, EmailMessage):
            yield part
        return
    payload = part.get_payload()
    for child in payload if isinstance(payload, list) else []:
        if isinstance(child, Message):
            yield from _leaves(child)


def _text_of(part: EmailMessage, problems: list[str]) -> str:
    try:
        content = part.get_content()
        if isinstance(content, str):
            return clean(content)
    except Exception as exc:  # unknown charset, broken transfer encoding
        problems.append(f"body: {exc}")
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _attachment(part: EmailMessage, problems: list[str]) -> NewAttachment | None:
    content_type = part.get_content_type()
    if content_type == "message/rfc822":
        inner = part.get_payload()
        attached = inner[0] if isinstance(inner, list) and inner else part
        data = _as_bytes(attached if isinstance(attached, Message) else part)
    else:
        decoded = part.get_payload(decode=True)
        data = decoded if isinstance(decoded, bytes) else b""
    try:
        filename = part.get_filename()
    except Exception:
        problems.append("attachment: unreadable filename")
        filename = None
    if not data and filename is None:
        return None
    disposition = part.get_content_disposition()
    content_id = _msgid(str(part.get("Content-ID") or "")) if part.get("Content-ID") else None
    return NewAttachment(
        data=data,
        filename=clean(filename) if filename else None,
        content_type=content_type,
        inline=disposition == "inline" or (disposition is None and content_id is not None),
        content_id=content_id,
    )


def _as_bytes(message: Message) -> bytes:
    try:
        return message.as_bytes(policy=policy.default)
    except Exception:
        return message.as_bytes(policy=policy.compat32)


_BLOCKS = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "blockquote", "pre"})
_SKIPPED = frozenset({"head", "title"})  # their text is not the body's
_RAW_TEXT = ("script", "style")  # their content is not markup: skipped to their end tag
# A tag runs to its ">" with no "<" inside: a match never reads past the next "<", so the scan
# is linear however the markup is broken (html.parser went quadratic on "<a " repeated).
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9:-]*)[^<>]*>")
_END_OF_RAW_TEXT = {name: re.compile(rf"</{name}[^<>]*>|</{name}", re.I) for name in _RAW_TEXT}


def html_to_text(html: str) -> str:
    """Readable text of an HTML body: tags dropped, blocks on their own lines. One pass over
    the markup, in time linear in its length whatever it holds."""
    parts: list[str] = []
    skipping = position = 0
    while position < len(html):
        start = html.find("<", position)
        start = len(html) if start < 0 else start
        if not skipping:
            parts.append(html[position:start])
        position, tag = _markup_at(html, start)
        if tag is None:
            if position == start + 1 and not skipping:
                parts.append("<")  # a "<" that starts no markup is text
            continue
        name = tag[2].lower()
        if name in _SKIPPED:
            skipping = max(0, skipping - 1) if tag[1] else skipping + 1
        elif name in _BLOCKS and not skipping:
            parts.append("\n")
    text = unescape("".join(parts))
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def _markup_at(html: str, start: int) -> tuple[int, re.Match[str] | None]:
    """Where the text resumes after the markup at ``start``, and the tag if it is one: a
    comment or declaration is skipped (unclosed, it hides the rest), a script's or style's
    content goes with its tag, and a "<" that starts nothing is one character of text."""
    if start >= len(html):
        return start, None
    for opening, closing in (("<!--", "-->"), ("<!", ">"), ("<?", ">")):
        if html.startswith(opening, start):
            end = html.find(closing, start + len(opening))
            return (len(html) if end < 0 else end + len(closing)), None
    tag = _TAG.match(html, start)
    if tag is None:
        return start + 1, None
    name = tag[2].lower()
    if name in _RAW_TEXT and not tag[1]:
        end_tag = _END_OF_RAW_TEXT[name].search(html, tag.end())
        return (end_tag.end() if end_tag is not None else len(html)), tag
    return tag.end(), tag

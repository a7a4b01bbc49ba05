"""The header fast paths of ingest.mime read exactly what the email package's parser reads.

Parsing spent most of its time building header objects (email.headerregistry makes a class
per call); plain address headers, Date headers and plain ASCII text headers (Subject and the
message-id headers) are now read directly. These properties hold the fast paths equal to the
full parser: on every value the plain form accepts, and on arbitrary text (where the plain form
must either decline or agree).
"""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ingest.mime import header_date, header_text, plain_addresses

ATEXT = "ABCXYZabcxyz0189!#$%&'*+/?^_`{|}~-"
atom = st.text(ATEXT, min_size=1, max_size=6)
dot_atom = st.lists(atom, min_size=1, max_size=3).map(".".join)
addr_spec = st.builds(lambda local, domain: f"{local}@{domain}", dot_atom, dot_atom)
display = st.lists(atom, min_size=1, max_size=3).map(" ".join)
blank = st.sampled_from(["", " ", "\t", "  "])
plain_party = st.one_of(
    st.builds(lambda a, before, after: f"{before}{a}{after}", addr_spec, blank, blank),
    st.builds(lambda a, before, after: f"{before}<{a}>{after}", addr_spec, blank, blank),
    st.builds(
        lambda n, a, before, gap, after: f"{before}{n}{gap}<{a}>{after}",
        display,
        addr_spec,
        blank,
        blank,
        blank,
    ),
)
plain_header = st.lists(plain_party, min_size=1, max_size=4).map(",".join)
# What headers of real mail hold, and what breaks the plain form: quotes, comments, groups,
# encoded words, folding, obsolete forms, garbage.
anything = st.text(ATEXT + ' \t\r\n,.;:<>@"()[]\\=?é', max_size=40)


def full_parser(value: str) -> list[tuple[str, str]]:
    header = policy.default.header_factory("To", value)
    return [(a.display_name, a.addr_spec) for a in header.addresses]


@given(value=plain_header)
@example(value="Ann Example <ann@example.com>, bob@example.org")
@example(value="O'Neil-Smith <o'neil@shop.example>")
@example(value="<ann@example.com>")  # as Postfix's smtp-source writes it
def test_a_plain_address_header_reads_as_the_full_parser_reads_it(value: str) -> None:
    assert plain_addresses(value) == full_parser(value)


@given(value=anything)
@example(value="=?utf-8?q?Ann?= <ann@example.com>")  # an encoded word: the full parser decodes it
@example(value='"Example, Ann" <ann@example.com>')
@example(value="ann@example.com (Ann)")
@example(value="team: ann@example.com, bob@example.org;")
@example(value="J. Smith <j@example.com>")
@example(value="ann@example.com,")
def test_the_plain_form_declines_or_agrees_on_anything(value: str) -> None:
    pairs = plain_addresses(value)
    if pairs is not None:
        assert pairs == full_parser(value)


def as_the_message_reads_it(name: str, value: str) -> tuple[EmailMessage, str | None]:
    """A message holding ``value`` in its ``name`` header, and that header's raw value."""
    message = email.message_from_string(f"{name}: {value}\r\n\r\nbody\r\n", policy=policy.default)
    assert isinstance(message, EmailMessage)
    raw = next((str(v) for k, v in message.raw_items() if k.lower() == name.lower()), None)
    return message, raw


def date_as_the_message_reads_it(value: str) -> tuple[str | None, object]:
    """The Date header of a message holding ``value``, as stored and as ``msg.get`` reads it."""
    message, raw = as_the_message_reads_it("Date", value)
    try:
        return raw, getattr(message.get("Date"), "datetime", None)
    except Exception:  # the header object could not be built: the message reads no date
        return raw, None


dates = st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S +0000"))


@given(value=st.one_of(dates, anything))
@example(value="Tue, 24 Nov 2026 10:00:00 +0100")
@example(value="Tue, 24 Nov 2026 10:00:00\r\n +0100")  # folded
@example(value="24 Nov 2026 10:00 GMT")
@example(value="Tue, 24 Nov 2026 10:00:00 -0000")  # no zone information: a naive moment
@example(value="yesterday")
@example(value="")
def test_a_date_header_reads_as_the_message_reads_it(value: str) -> None:
    raw, expected = date_as_the_message_reads_it(value)
    if raw is not None:
        assert header_date(raw) == expected


TEXT_HEADERS = ("Subject", "Message-ID", "In-Reply-To", "References")
ascii_text = st.text(st.characters(max_codepoint=127, exclude_characters="\r\n"), max_size=40)
folded = st.lists(ascii_text, min_size=1, max_size=3).map("\r\n ".join)
id_atom = st.text(ATEXT + "=?", min_size=1, max_size=6)
id_dot_atom = st.lists(id_atom, min_size=1, max_size=3).map(".".join)
message_id = st.builds(lambda left, right, before, after: f"{before}<{left}@{right}>{after}",
                       id_dot_atom, id_dot_atom, blank, blank)  # fmt: skip


@given(name=st.sampled_from(TEXT_HEADERS), value=st.one_of(folded, message_id, anything))
@example(name="Subject", value="Re: Order 12 (kettle)   broken")
@example(name="Subject", value="=?utf-8?q?Caf=C3=A9?= order")  # an encoded word: decoded
@example(name="Subject", value="Caf\u00e9")  # not ASCII: the full parser
@example(name="Message-ID", value="<import-1@bench.example>")
@example(name="Message-ID", value="<CAF=x+Y_z@mail.gmail.com>")
@example(name="Message-ID", value="(a comment) <a@b> trailing")
@example(name="Message-ID", value="no brackets at all")
@example(name="References", value="<a@b>\r\n <c@d>\r\n\t<e@f>")
@example(name="In-Reply-To", value="")
@example(name="Message-ID", value="<")  # the full parser raises IndexError
def test_a_text_header_reads_as_the_full_parser_reads_it(name: str, value: str) -> None:
    message, raw = as_the_message_reads_it(name, value)
    if raw is None:
        return
    try:
        expected = str(message.get(name))
    except Exception as exc:  # the full parser fails on some garbage: the fast path leaves it
        with pytest.raises(type(exc)):
            header_text(message, name, raw)
    else:
        assert header_text(message, name, raw) == expected

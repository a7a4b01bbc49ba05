"""The header fast paths of ingest.mime read exactly what the email package's parser reads.

Parsing spent most of its time building header objects (email.headerregistry makes a class
per call); plain address headers and Date headers are now read directly. These properties
hold the fast paths equal to the full parser: on every value the plain form accepts, and on
arbitrary text (where the plain form must either decline or agree).
"""

from __future__ import annotations

import email
from email import policy

from hypothesis import example, given
from hypothesis import strategies as st

from ingest.mime import header_date, plain_addresses

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


def date_as_the_message_reads_it(value: str) -> tuple[str | None, object]:
    """The Date header of a message holding ``value``, as stored and as ``msg.get`` reads it."""
    message = email.message_from_string(f"Date: {value}\r\n\r\nbody\r\n", policy=policy.default)
    raw = next((str(v) for k, v in message.raw_items() if k.lower() == "date"), None)
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

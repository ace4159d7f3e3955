"""Tests of line framing, IMAP literal suffixes, SMTP replies and POP3 lists."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailproxy_core.errors import ConfigurationError, MailProxyError
from mailproxy_core.framing import (
    MAX_LITERAL_SIZE,
    DotTerminatedReader,
    LineBuffer,
    LineTooLongError,
    MalformedLiteralError,
    MalformedReplyError,
    SmtpReply,
    SmtpReplyParser,
    TooManyLinesError,
    parse_literal_suffix,
)


def drain(buffer: LineBuffer) -> tuple[list[bytes], bool]:
    """Read lines until none is complete; report whether the limit was hit."""
    lines = []
    try:
        while (line := buffer.next_line()) is not None:
            lines.append(line)
    except LineTooLongError:
        return lines, True
    return lines, False


def feed_in_chunks(
    chunks: list[bytes], *, max_line: int, allow_bare_lf: bool
) -> tuple[list[bytes], bool]:
    """Feed chunks one by one, draining after each, up to the first error."""
    buffer = LineBuffer(max_line=max_line, allow_bare_lf=allow_bare_lf)
    lines: list[bytes] = []
    for chunk in chunks:
        buffer.feed(chunk)
        assert len(buffer) <= max_line + len(chunk)
        new_lines, failed = drain(buffer)
        lines += new_lines
        if failed:
            return lines, True
    return lines, False


def reference_split(
    data: bytes, *, max_line: int, allow_bare_lf: bool
) -> tuple[list[bytes], bool]:
    """Split lines the slow, obvious way, as a model for LineBuffer."""
    lines = []
    start = 0
    position = 0
    while position < len(data):
        ends_line = data[position] == 0x0A and (
            allow_bare_lf or (position > start and data[position - 1] == 0x0D)
        )
        if ends_line:
            if position + 1 - start > max_line:
                return lines, True
            line = data[start:position]
            lines.append(line[:-1] if line.endswith(b"\r") else line)
            start = position + 1
        position += 1
    return lines, len(data) - start > max_line


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# --- LineBuffer ------------------------------------------------------------


def test_line_buffer_splits_crlf_lines() -> None:
    buffer = LineBuffer(max_line=100)
    buffer.feed(b"a1 NOOP\r\na2 LOGOUT\r\npartial")

    assert buffer.next_line() == b"a1 NOOP"
    assert buffer.next_line() == b"a2 LOGOUT"
    assert buffer.next_line() is None
    assert len(buffer) == len(b"partial")


def test_line_buffer_joins_fed_pieces() -> None:
    buffer = LineBuffer(max_line=100)
    buffer.feed(b"a1 NO")
    assert buffer.next_line() is None

    buffer.feed(b"OP\r")
    assert buffer.next_line() is None

    buffer.feed(b"\n")
    assert buffer.next_line() == b"a1 NOOP"
    assert len(buffer) == 0


def test_line_buffer_empty_lines() -> None:
    buffer = LineBuffer(max_line=10)
    buffer.feed(b"\r\n\r\n")

    assert buffer.next_line() == b""
    assert buffer.next_line() == b""
    assert buffer.next_line() is None


def test_line_buffer_bare_lf_allowed() -> None:
    buffer = LineBuffer(max_line=100, allow_bare_lf=True)
    buffer.feed(b"one\ntwo\r\nthree\r\r\n")

    assert buffer.next_line() == b"one"
    assert buffer.next_line() == b"two"
    assert buffer.next_line() == b"three\r"
    assert buffer.next_line() is None


def test_line_buffer_bare_lf_stays_in_line() -> None:
    buffer = LineBuffer(max_line=100, allow_bare_lf=False)
    buffer.feed(b"one\ntwo\r\n\nthree")

    assert buffer.next_line() == b"one\ntwo"
    assert buffer.next_line() is None

    buffer.feed(b"\r\n")
    assert buffer.next_line() == b"\nthree"


def test_line_buffer_bare_cr_stays_in_line() -> None:
    buffer = LineBuffer(max_line=100, allow_bare_lf=False)
    buffer.feed(b"a\rb\r\n")

    assert buffer.next_line() == b"a\rb"


def test_line_buffer_crlf_split_across_feeds() -> None:
    buffer = LineBuffer(max_line=100, allow_bare_lf=False)
    buffer.feed(b"abc\r")
    assert buffer.next_line() is None

    buffer.feed(b"\nxyz\r\n")
    assert buffer.next_line() == b"abc"
    assert buffer.next_line() == b"xyz"


def test_line_buffer_line_at_limit() -> None:
    buffer = LineBuffer(max_line=10)
    buffer.feed(b"x" * 8 + b"\r\n")

    assert buffer.next_line() == b"x" * 8


def test_line_buffer_line_over_limit() -> None:
    buffer = LineBuffer(max_line=10)
    buffer.feed(b"x" * 9 + b"\r\n")

    with pytest.raises(LineTooLongError) as caught:
        buffer.next_line()
    assert caught.value.limit == 10
    assert isinstance(caught.value, MailProxyError)


def test_line_buffer_error_repeats() -> None:
    buffer = LineBuffer(max_line=4)
    buffer.feed(b"abcdef\r\n")

    with pytest.raises(LineTooLongError):
        buffer.next_line()
    with pytest.raises(LineTooLongError):
        buffer.next_line()

    buffer.clear()
    buffer.feed(b"ok\r\n")
    assert buffer.next_line() == b"ok"


def test_line_buffer_lines_before_long_line() -> None:
    buffer = LineBuffer(max_line=10)
    buffer.feed(b"short\r\n" + b"y" * 30)

    assert buffer.next_line() == b"short"
    with pytest.raises(LineTooLongError):
        buffer.next_line()


def test_line_buffer_unterminated_flood() -> None:
    max_line = 1000
    chunk = b"a" * 4096
    buffer = LineBuffer(max_line=max_line)

    buffer.feed(chunk)
    assert len(buffer) <= max_line + len(chunk)
    with pytest.raises(LineTooLongError):
        buffer.next_line()


def test_line_buffer_flood_in_small_chunks() -> None:
    max_line = 1000
    buffer = LineBuffer(max_line=max_line)
    raised = False
    for _ in range(10_000):
        buffer.feed(b"a" * 7)
        assert len(buffer) <= max_line + 7
        try:
            buffer.next_line()
        except LineTooLongError:
            raised = True
            break

    assert raised
    assert len(buffer) == 1001


def test_line_buffer_unterminated_at_limit() -> None:
    buffer = LineBuffer(max_line=5)
    buffer.feed(b"abcde")

    assert buffer.next_line() is None

    buffer.feed(b"f")
    with pytest.raises(LineTooLongError):
        buffer.next_line()


def test_line_buffer_max_line_applies_to_next_line() -> None:
    buffer = LineBuffer(max_line=10)
    buffer.feed(b"12345678\r\n" + b"z" * 20 + b"\r\n")

    assert buffer.next_line() == b"12345678"

    buffer.max_line = 30
    assert buffer.max_line == 30
    assert buffer.next_line() == b"z" * 20


def test_line_buffer_lower_max_line_after_scan() -> None:
    buffer = LineBuffer(max_line=100)
    buffer.feed(b"x" * 50)
    assert buffer.next_line() is None

    buffer.max_line = 20
    with pytest.raises(LineTooLongError):
        buffer.next_line()


@pytest.mark.parametrize("value", [0, -1])
def test_line_buffer_invalid_max_line(value: int) -> None:
    with pytest.raises(ConfigurationError):
        LineBuffer(max_line=value)

    buffer = LineBuffer(max_line=10)
    with pytest.raises(ConfigurationError):
        buffer.max_line = value


def test_line_buffer_scans_each_byte_once() -> None:
    # A bytearray that counts the bytes that find() examines, to check that
    # feeding many small chunks does not rescan the buffer from the start.
    class CountingBytearray(bytearray):
        examined = 0

        def find(self, sub: bytes, start: int = 0, end: int = 0, /) -> int:
            CountingBytearray.examined += max(0, end - start)
            return super().find(sub, start, end)

    total = 50_000
    buffer = LineBuffer(max_line=total + 10, allow_bare_lf=False)
    buffer._buffer = CountingBytearray()
    for _ in range(total // 10):
        buffer.feed(b"abcdefghi\n")
        assert buffer.next_line() is None

    assert CountingBytearray.examined <= total


def test_read_exact_literal_between_lines() -> None:
    buffer = LineBuffer(max_line=100)
    buffer.feed(b"a1 LOGIN {5}\r\nalice {6}\r\n")

    line = buffer.next_line()
    assert line == b"a1 LOGIN {5}"
    assert parse_literal_suffix(line) == (5, False)

    assert buffer.read_exact(5) == b"alice"
    line = buffer.next_line()
    assert line == b" {6}"
    assert parse_literal_suffix(line) == (6, False)

    assert buffer.read_exact(6) is None
    buffer.feed(b"se\r\ncr")
    assert buffer.read_exact(6) == b"se\r\ncr"

    buffer.feed(b"\r\n")
    assert buffer.next_line() == b""


def test_read_exact_after_scanning() -> None:
    buffer = LineBuffer(max_line=100)
    buffer.feed(b"abc")
    assert buffer.next_line() is None

    assert buffer.read_exact(2) == b"ab"
    buffer.feed(b"d\r\n")
    assert buffer.next_line() == b"cd"


def test_read_exact_literal_with_crlf() -> None:
    buffer = LineBuffer(max_line=100, allow_bare_lf=False)
    buffer.feed(b"a\r\nb\r")

    assert buffer.read_exact(5) == b"a\r\nb\r"
    buffer.feed(b"\nrest\r\n")
    assert buffer.next_line() == b"\nrest"


def test_read_exact_zero_and_negative() -> None:
    buffer = LineBuffer(max_line=10)
    assert buffer.read_exact(0) == b""

    with pytest.raises(ValueError):
        buffer.read_exact(-1)


def test_take_all_empties_buffer() -> None:
    buffer = LineBuffer(max_line=100)
    buffer.feed(b"a1 OK done\r\n* relayed bytes")

    assert buffer.next_line() == b"a1 OK done"
    assert buffer.take_all() == b"* relayed bytes"
    assert len(buffer) == 0
    assert buffer.take_all() == b""


def test_clear_discards_bytes() -> None:
    buffer = LineBuffer(max_line=100)
    buffer.feed(b"abc\r\ndef")
    buffer.clear()

    assert len(buffer) == 0
    assert buffer.next_line() is None


line_bytes = st.lists(
    st.sampled_from([b"a", b"b", b"\r", b"\n", b"\r\n", b"xyz"]), max_size=60
).map(b"".join)


@given(
    data=line_bytes,
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=20),
    max_line=st.integers(min_value=1, max_value=12),
    allow_bare_lf=st.booleans(),
)
def test_line_buffer_chunking_invariance(
    data: bytes, cuts: list[int], max_line: int, allow_bare_lf: bool
) -> None:
    options = {"max_line": max_line, "allow_bare_lf": allow_bare_lf}

    whole = feed_in_chunks([data], **options)
    chunked = feed_in_chunks(split_at(data, cuts), **options)
    bytewise = feed_in_chunks([bytes([b]) for b in data], **options)
    expected = reference_split(data, **options)

    assert whole == expected
    assert chunked == expected
    assert bytewise == expected


# --- parse_literal_suffix --------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"a1 LOGIN {5}", (5, False)),
        (b"a1 LOGIN alice {8+}", (8, True)),
        (b"a1 APPEND INBOX (\\Seen) {310}", (310, False)),
        (b"{0}", (0, False)),
        (b"a1 LOGIN {0005}", (5, False)),
        (b"a1 APPEND INBOX ~{12}", (12, False)),
        (b"x {4294967295}", (MAX_LITERAL_SIZE, False)),
    ],
)
def test_literal_suffix_valid(line: bytes, expected: tuple[int, bool]) -> None:
    assert parse_literal_suffix(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"a1 LOGIN alice secret",
        b"",
        b"a1 LOGIN {5} alice",
        b'a1 LOGIN "{5}" alice',
        b"a1 LOGIN alice pa{ss",
        b"a1 SEARCH {a b}",
        b"a1 LOGIN alice }",
        b"a1 LOGIN {5}}",
        b"a1 LOGIN { 5}",
    ],
)
def test_literal_suffix_absent(line: bytes) -> None:
    assert parse_literal_suffix(line) is None


@pytest.mark.parametrize(
    "line",
    [
        b"a1 LOGIN {abc}",
        b"a1 LOGIN {}",
        b"a1 LOGIN {-1}",
        b"a1 LOGIN {+}",
        b"a1 LOGIN {5++}",
        b"a1 LOGIN {4294967296}",
        b"a1 LOGIN {00000000001}",
        b"a1 LOGIN {12+",
        b"a1 LOGIN {12",
    ],
)
def test_literal_suffix_malformed(line: bytes) -> None:
    with pytest.raises(MalformedLiteralError) as caught:
        parse_literal_suffix(line)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, MailProxyError)


@pytest.mark.parametrize(
    "line",
    [b"* OK server ready {beta}", b"* OK {}", b"* OK {4294967296}", b"* OK {12"],
)
def test_literal_suffix_lenient(line: bytes) -> None:
    assert parse_literal_suffix(line, strict=False) is None
    with pytest.raises(MalformedLiteralError):
        parse_literal_suffix(line)


def test_literal_suffix_lenient_valid() -> None:
    assert parse_literal_suffix(b"* 1 FETCH (BODY[] {12}", strict=False) == (12, False)


def test_literal_error_hides_text() -> None:
    with pytest.raises(MalformedLiteralError) as caught:
        parse_literal_suffix(b"a1 LOGIN alice {hunter2}")
    assert "hunter2" not in str(caught.value)


# --- SMTP replies ----------------------------------------------------------

EHLO_REPLY = (
    b"250-mail.example.test Hello client.example.test\r\n"
    b"250-SIZE 35882577\r\n"
    b"250-8BITMIME\r\n"
    b"250-AUTH PLAIN LOGIN XOAUTH2\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250 STARTTLS\r\n"
)
EHLO_LINES = (
    b"mail.example.test Hello client.example.test",
    b"SIZE 35882577",
    b"8BITMIME",
    b"AUTH PLAIN LOGIN XOAUTH2",
    b"ENHANCEDSTATUSCODES",
    b"STARTTLS",
)


def test_smtp_ehlo_reply_whole() -> None:
    parser = SmtpReplyParser()

    assert parser.feed(EHLO_REPLY) == [SmtpReply(250, EHLO_LINES)]


def test_smtp_ehlo_reply_split_at_every_byte() -> None:
    for cut in range(len(EHLO_REPLY) + 1):
        parser = SmtpReplyParser()
        replies = parser.feed(EHLO_REPLY[:cut]) + parser.feed(EHLO_REPLY[cut:])
        assert replies == [SmtpReply(250, EHLO_LINES)], cut


def test_smtp_ehlo_reply_byte_by_byte() -> None:
    parser = SmtpReplyParser()
    replies = []
    for index in range(len(EHLO_REPLY)):
        replies += parser.feed(EHLO_REPLY[index : index + 1])
        if index < len(EHLO_REPLY) - 1:
            assert replies == []

    assert replies == [SmtpReply(250, EHLO_LINES)]


def test_smtp_several_replies_in_one_feed() -> None:
    parser = SmtpReplyParser()
    replies = parser.feed(b"220 ready\r\n250-a\r\n250 b\r\n354 go ahead\r\n")

    assert replies == [
        SmtpReply(220, (b"ready",)),
        SmtpReply(250, (b"a", b"b")),
        SmtpReply(354, (b"go ahead",)),
    ]


@pytest.mark.parametrize(
    ("line", "last"),
    [
        (b"334 VXNlcm5hbWU6\r\n", b"VXNlcm5hbWU6"),
        (b"334 \r\n", b""),
        (b"334\r\n", b""),
        (b"334  \r\n", b" "),
    ],
)
def test_smtp_334_challenge(line: bytes, last: bytes) -> None:
    parser = SmtpReplyParser()
    [reply] = parser.feed(line)

    assert reply.code == 334
    assert reply.last == last
    assert reply.is_positive_intermediate()
    assert reply.is_positive()


def test_smtp_bare_code_ends_reply() -> None:
    parser = SmtpReplyParser()

    assert parser.feed(b"250-first\r\n250\r\n") == [SmtpReply(250, (b"first", b""))]


def test_smtp_bare_lf_reply() -> None:
    parser = SmtpReplyParser()
    assert parser.feed(b"250-a\n250 b\n") == [SmtpReply(250, (b"a", b"b"))]

    strict = SmtpReplyParser(allow_bare_lf=False)
    assert strict.feed(b"250 a\n") == []


def test_smtp_code_mismatch() -> None:
    parser = SmtpReplyParser()

    with pytest.raises(MalformedReplyError) as caught:
        parser.feed(b"250-first\r\n251 second\r\n")
    assert "250" in str(caught.value)
    assert "251" in str(caught.value)


@pytest.mark.parametrize(
    "line",
    [
        b"25 short\r\n",
        b"25\r\n",
        b"\r\n",
        b"abc def\r\n",
        b"2x0 ok\r\n",
        b"150 wrong class\r\n",
        b"650 wrong class\r\n",
        b"250+ok\r\n",
        b"250ok\r\n",
        b"+OK pop3 greeting\r\n",
        b"\xb2\xb5\xb0 ok\r\n",
    ],
)
def test_smtp_malformed_line(line: bytes) -> None:
    parser = SmtpReplyParser()

    with pytest.raises(MalformedReplyError):
        parser.feed(line)


def test_smtp_bare_lf_inside_strict_line() -> None:
    parser = SmtpReplyParser(allow_bare_lf=False)

    with pytest.raises(MalformedReplyError):
        parser.feed(b"250 a\nb\r\n")


def test_smtp_line_too_long() -> None:
    parser = SmtpReplyParser()
    longest = b"250 " + b"x" * 506 + b"\r\n"
    assert len(longest) == 512
    assert parser.feed(longest) == [SmtpReply(250, (b"x" * 506,))]

    with pytest.raises(LineTooLongError):
        parser.feed(b"250 " + b"x" * 507 + b"\r\n")


def test_smtp_reply_line_limit() -> None:
    parser = SmtpReplyParser(max_lines=3)
    assert parser.feed(b"250-a\r\n250-b\r\n250 c\r\n") == [
        SmtpReply(250, (b"a", b"b", b"c"))
    ]

    with pytest.raises(TooManyLinesError) as caught:
        parser.feed(b"250-a\r\n250-b\r\n250-c\r\n250 d\r\n")
    assert caught.value.limit == 3


def test_smtp_take_all_after_reply() -> None:
    parser = SmtpReplyParser()
    assert parser.feed(b"235 2.7.0 ok\r\nrelayed") == [SmtpReply(235, (b"2.7.0 ok",))]

    assert parser.take_all() == b"relayed"
    assert parser.take_all() == b""


def test_smtp_take_all_mid_reply() -> None:
    parser = SmtpReplyParser()
    assert parser.feed(b"250-a\n250-b\r\n250 c") == []

    assert parser.take_all() == b"250-a\r\n250-b\r\n250 c"
    assert parser.feed(b"250 next\r\n") == [SmtpReply(250, (b"next",))]


def test_smtp_reply_classes() -> None:
    ok = SmtpReply(250, (b"ok",))
    temporary = SmtpReply(421, (b"closing",))
    permanent = SmtpReply(535, (b"5.7.8 failed",))

    assert ok.is_positive_completion()
    assert ok.is_positive()
    assert temporary.is_transient_negative()
    assert not temporary.is_positive()
    assert permanent.is_permanent_negative()
    assert not permanent.is_positive_completion()


def test_smtp_reply_text_and_bytes() -> None:
    reply = SmtpReply(250, (b"a", b"b\xff"))

    assert reply.last == b"b\xff"
    assert reply.text == "a\nb\\xff"
    assert reply.to_bytes() == b"250-a\r\n250 b\xff\r\n"
    assert SmtpReply(334, (b"",)).to_bytes() == b"334 \r\n"


@pytest.mark.parametrize(
    ("code", "lines"),
    [(199, (b"x",)), (600, (b"x",)), (250, ()), (250, (b"a\r\nb",))],
)
def test_smtp_reply_invalid_fields(code: int, lines: tuple[bytes, ...]) -> None:
    with pytest.raises(ValueError):
        SmtpReply(code, lines)


# --- POP3 responses ----------------------------------------------------------

CAPA_RESPONSE = (
    b"+OK Capability list follows\r\n"
    b"TOP\r\n"
    b"USER\r\n"
    b"SASL PLAIN XOAUTH2\r\n"
    b"..hidden\r\n"
    b".x\r\n"
    b"..\r\n"
    b"RESP-CODES\r\n"
    b".\r\n"
)
CAPA_LINES = [
    b"TOP",
    b"USER",
    b"SASL PLAIN XOAUTH2",
    b".hidden",
    b"x",
    b".",
    b"RESP-CODES",
]


def read_pop3_multiline(chunks: list[bytes]) -> tuple[bytes, list[bytes]]:
    """Read a status line with LineBuffer, then the list with the reader."""
    buffer = LineBuffer(max_line=512)
    reader = DotTerminatedReader()
    status = None
    for chunk in chunks:
        if status is None:
            buffer.feed(chunk)
            status = buffer.next_line()
            if status is None:
                continue
            chunk = buffer.take_all()
        lines = reader.feed(chunk)
        if lines is not None:
            return status, lines
    raise AssertionError("the response did not end")


def test_pop3_capa_split_at_every_byte() -> None:
    for cut in range(len(CAPA_RESPONSE) + 1):
        chunks = [CAPA_RESPONSE[:cut], CAPA_RESPONSE[cut:]]
        status, lines = read_pop3_multiline(chunks)
        assert status == b"+OK Capability list follows", cut
        assert lines == CAPA_LINES, cut


def test_pop3_capa_byte_by_byte() -> None:
    chunks = [CAPA_RESPONSE[i : i + 1] for i in range(len(CAPA_RESPONSE))]
    status, lines = read_pop3_multiline(chunks)

    assert status == b"+OK Capability list follows"
    assert lines == CAPA_LINES


def test_pop3_body_split_at_every_byte() -> None:
    body = CAPA_RESPONSE.split(b"\r\n", 1)[1]
    for cut in range(len(body) + 1):
        reader = DotTerminatedReader()
        first = reader.feed(body[:cut])
        if cut < len(body):
            assert first is None, cut
            assert reader.feed(body[cut:]) == CAPA_LINES, cut
        else:
            assert first == CAPA_LINES


def test_pop3_empty_list() -> None:
    reader = DotTerminatedReader()

    assert reader.feed(b".\r\n") == []


def test_pop3_two_responses_buffered() -> None:
    reader = DotTerminatedReader()

    assert reader.feed(b"a\r\n.\r\nb\r\n.\r\nrest") == [b"a"]
    assert reader.feed(b"") == [b"b"]
    assert reader.feed(b"") is None
    assert reader.take_all() == b"rest"


def test_pop3_take_all_mid_response() -> None:
    reader = DotTerminatedReader()
    assert reader.feed(b"TOP\r\n..hidden\nUS") is None

    assert reader.take_all() == b"TOP\r\n..hidden\r\nUS"


def test_pop3_line_limits() -> None:
    reader = DotTerminatedReader(max_lines=2)
    with pytest.raises(TooManyLinesError):
        reader.feed(b"a\r\nb\r\nc\r\n.\r\n")

    long_line = DotTerminatedReader()
    with pytest.raises(LineTooLongError):
        long_line.feed(b"x" * 511 + b"\r\n")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"+OK POP3 server ready <1896.697170952@dbc.example.test>\r\n", b"+OK"),
        (b"-ERR [IN-USE] mailbox locked by another session\r\n", b"-ERR"),
        (b"-ERR [AUTH] invalid user name or password\r\n", b"-ERR"),
    ],
)
def test_pop3_single_line_status(data: bytes, expected: bytes) -> None:
    buffer = LineBuffer(max_line=512)
    for index in range(len(data) - 1):
        buffer.feed(data[index : index + 1])
        assert buffer.next_line() is None
    buffer.feed(data[-1:])

    line = buffer.next_line()
    assert line is not None
    status, _, text = line.partition(b" ")
    assert status == expected
    assert text == data[len(expected) + 1 : -2]

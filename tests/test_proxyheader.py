"""Tests of the PROXY protocol header parser, versions 1 and 2."""

from __future__ import annotations

import ipaddress
import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailproxy_core.errors import ConfigurationError, LocalProtocolError
from mailproxy_core.proxyheader import (
    MAX_V1_LINE,
    MAX_V2_LENGTH,
    V2_SIGNATURE,
    ProxyCommand,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderParser,
)

# Bytes that a TLS client sends first: a handshake record of TLS 1.0.
CLIENT_HELLO = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"

V1_TCP4 = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 993\r\n"

PROXY_TCP4 = 0x21
LOCAL = 0x20


def v2(
    *,
    version_command: int = PROXY_TCP4,
    family: int = 0x11,
    block: bytes = b"",
    length: int | None = None,
) -> bytes:
    """Build a version 2 header; ``length`` defaults to the block's size."""
    size = len(block) if length is None else length
    return V2_SIGNATURE + struct.pack("!BBH", version_command, family, size) + block


def inet_block(
    source: str = "192.0.2.7",
    destination: str = "198.51.100.1",
    ports: tuple[int, int] = (40000, 993),
) -> bytes:
    """Return a version 2 address block of two IPv4 or two IPv6 addresses."""
    packed = ipaddress.ip_address(source).packed
    packed += ipaddress.ip_address(destination).packed
    return packed + struct.pack("!HH", *ports)


def tlv(kind: int, value: bytes) -> bytes:
    """Return one version 2 TLV."""
    return struct.pack("!BH", kind, len(value)) + value


def parse(data: bytes) -> tuple[ProxyHeader | None, ProxyHeaderParser]:
    """Feed ``data`` at once to a new parser."""
    parser = ProxyHeaderParser()
    return parser.feed(data), parser


def parse_complete(data: bytes) -> ProxyHeader:
    """Feed ``data`` at once and return the header, which must be complete."""
    header, _ = parse(data)
    assert header is not None
    return header


# Version 1 -------------------------------------------------------------------


def test_v1_tcp4() -> None:
    header, parser = parse(V1_TCP4 + CLIENT_HELLO)
    assert header == ProxyHeader(
        version=1,
        command=ProxyCommand.PROXY,
        source=("192.0.2.7", 40000),
        destination=("198.51.100.1", 993),
    )
    assert parser.remaining() == CLIENT_HELLO


def test_v1_tcp6_is_normalized() -> None:
    header = parse_complete(b"PROXY TCP6 2001:DB8:0:0::7 ::1 65535 0\r\n")
    assert header.source == ("2001:db8::7", 65535)
    assert header.destination == ("::1", 0)


def test_v1_longest_tcp6_line_fits() -> None:
    full = ":".join(["ffff"] * 8)
    line = f"PROXY TCP6 {full} {full} 65535 65535\r\n".encode()
    assert len(line) == 104
    assert parse_complete(line).source == (full, 65535)


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY UNKNOWN\r\n",
        b"PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n",
        b"PROXY UNKNOWN anything \xff at all\r\n",
    ],
)
def test_v1_unknown_has_no_address(line: bytes) -> None:
    header, parser = parse(line)
    assert header == ProxyHeader(
        version=1, command=ProxyCommand.PROXY, source=None, destination=None
    )
    assert parser.remaining() == b""


def test_v1_longest_unknown_line_fits() -> None:
    full = ":".join(["ffff"] * 8)
    line = f"PROXY UNKNOWN {full} {full} 65535 65535\r\n".encode()
    assert len(line) == MAX_V1_LINE
    assert parse_complete(line).source is None


def test_v1_incomplete_line_returns_none() -> None:
    parser = ProxyHeaderParser()
    assert parser.feed(V1_TCP4[:-1]) is None
    assert parser.feed(V1_TCP4[-1:]) is not None


BAD_V1_LINES = {
    "lowercase signature": b"proxy TCP4 192.0.2.7 198.51.100.1 1 2\r\n",
    "signature without space": b"PROXY\r\n",
    "signature typo": b"PROXX TCP4\r\n",
    "bare LF": b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n",
    "bare CR inside": b"PROXY TCP4 192.0.2.7\r198.51.100.1 1 2\r\n",
    "CR CR LF": b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\r\r\n",
    "unknown protocol": b"PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n",
    "lowercase protocol": b"PROXY tcp4 192.0.2.7 198.51.100.1 1 2\r\n",
    "UNKNOWN with suffix": b"PROXY UNKNOWNX\r\n",
    "empty protocol": b"PROXY \r\n",
    "double space": b"PROXY TCP4  192.0.2.7 198.51.100.1 1 2\r\n",
    "trailing space": b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2 \r\n",
    "tab separator": b"PROXY TCP4 192.0.2.7\t198.51.100.1 1 2\r\n",
    "missing port": b"PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n",
    "extra field": b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2 3\r\n",
    "IPv4 leading zero": b"PROXY TCP4 192.0.2.07 198.51.100.1 1 2\r\n",
    "IPv4 octet too big": b"PROXY TCP4 192.0.2.256 198.51.100.1 1 2\r\n",
    "IPv4 three octets": b"PROXY TCP4 192.0.2 198.51.100.1 1 2\r\n",
    "IPv4 as integer": b"PROXY TCP4 3221225991 198.51.100.1 1 2\r\n",
    "IPv6 for TCP4": b"PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n",
    "IPv4 for TCP6": b"PROXY TCP6 192.0.2.7 ::1 1 2\r\n",
    "mixed families": b"PROXY TCP6 2001:db8::7 198.51.100.1 1 2\r\n",
    "IPv6 with dotted tail": b"PROXY TCP6 ::ffff:192.0.2.7 ::1 1 2\r\n",
    "IPv6 with scope": b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
    "IPv6 group too long": b"PROXY TCP6 2001:0db80::7 ::1 1 2\r\n",
    "IPv6 two double colons": b"PROXY TCP6 2001::db8::7 ::1 1 2\r\n",
    "IPv6 in brackets": b"PROXY TCP6 [::7] ::1 1 2\r\n",
    "host name": b"PROXY TCP4 localhost 198.51.100.1 1 2\r\n",
    "non-ASCII address": "PROXY TCP4 \uff11.2.3.4 198.51.100.1 1 2\r\n".encode(),
    "port too big": b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 2\r\n",
    "port far too big": b"PROXY TCP4 192.0.2.7 198.51.100.1 1 9999999\r\n",
    "port leading zero": b"PROXY TCP4 192.0.2.7 198.51.100.1 01 2\r\n",
    "port double zero": b"PROXY TCP4 192.0.2.7 198.51.100.1 00 2\r\n",
    "port with plus": b"PROXY TCP4 192.0.2.7 198.51.100.1 +1 2\r\n",
    "port negative": b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 2\r\n",
    "port hexadecimal": b"PROXY TCP4 192.0.2.7 198.51.100.1 0x10 2\r\n",
    "port with underscore": b"PROXY TCP4 192.0.2.7 198.51.100.1 1_0 2\r\n",
    "port non-ASCII digit": "PROXY TCP4 192.0.2.7 198.51.100.1 \u0663 2\r\n".encode(),
    "port empty": b"PROXY TCP4 192.0.2.7 198.51.100.1  2\r\n",
}


@pytest.mark.parametrize("line", BAD_V1_LINES.values(), ids=BAD_V1_LINES.keys())
def test_v1_malformed_line_raises(line: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        ProxyHeaderParser().feed(line)


@pytest.mark.parametrize("line", BAD_V1_LINES.values(), ids=BAD_V1_LINES.keys())
def test_v1_malformed_line_raises_bytewise(line: bytes) -> None:
    parser = ProxyHeaderParser()
    with pytest.raises(ProxyHeaderError):
        for byte in line:
            parser.feed(bytes([byte]))


def test_v1_line_over_limit_raises() -> None:
    line = b"PROXY UNKNOWN " + b"x" * (MAX_V1_LINE - 15) + b"\r\n"
    assert len(line) == MAX_V1_LINE + 1
    with pytest.raises(ProxyHeaderError, match="maximum of 107 bytes"):
        ProxyHeaderParser().feed(line)


def test_v1_unterminated_line_raises_at_limit() -> None:
    parser = ProxyHeaderParser()
    data = b"PROXY UNKNOWN " + b"x" * 200
    accepted = 0
    with pytest.raises(ProxyHeaderError, match="no CRLF"):
        for byte in data:
            parser.feed(bytes([byte]))
            accepted += 1
    # The line can no longer end in time once 106 bytes arrived without CR,
    # so the 106th byte raises.
    assert accepted + 1 == MAX_V1_LINE - 1


def test_v1_own_limit_applies() -> None:
    parser = ProxyHeaderParser(max_v1=40)
    with pytest.raises(ProxyHeaderError, match="maximum of 40 bytes"):
        parser.feed(V1_TCP4)


def test_v1_line_at_own_limit_passes() -> None:
    parser = ProxyHeaderParser(max_v1=len(V1_TCP4))
    assert parser.feed(V1_TCP4) is not None


# Version 2 -------------------------------------------------------------------


def test_v2_tcp4() -> None:
    header, parser = parse(v2(block=inet_block()) + CLIENT_HELLO)
    assert header == ProxyHeader(
        version=2,
        command=ProxyCommand.PROXY,
        source=("192.0.2.7", 40000),
        destination=("198.51.100.1", 993),
    )
    assert parser.remaining() == CLIENT_HELLO


def test_v2_tcp6_with_tlvs() -> None:
    block = inet_block("2001:db8::7", "2001:db8::1", (0, 65535))
    tlvs = tlv(0x01, b"imap") + tlv(0x04, b"") + tlv(0xE0, b"\x00" * 300)
    header = parse_complete(v2(family=0x21, block=block + tlvs))
    assert header.source == ("2001:db8::7", 0)
    assert header.destination == ("2001:db8::1", 65535)
    assert header.tlvs == ((0x01, b"imap"), (0x04, b""), (0xE0, b"\x00" * 300))


def test_v2_udp4_has_addresses() -> None:
    header = parse_complete(v2(family=0x12, block=inet_block()))
    assert header.source == ("192.0.2.7", 40000)


def test_v2_unix_has_no_address() -> None:
    paths = b"/run/lb.sock".ljust(108, b"\x00") * 2
    header = parse_complete(v2(family=0x31, block=paths + tlv(0x02, b"mail.test")))
    assert header.source is None
    assert header.destination is None
    assert header.tlvs == ((0x02, b"mail.test"),)


def test_v2_local_ignores_block() -> None:
    header = parse_complete(v2(version_command=LOCAL, family=0x00))
    assert header == ProxyHeader(
        version=2, command=ProxyCommand.LOCAL, source=None, destination=None
    )


def test_v2_local_ignores_family_and_addresses() -> None:
    # A LOCAL header's family is ignored, even one that PROXY would reject.
    header = parse_complete(v2(version_command=LOCAL, family=0xFF, block=b"\xff" * 5))
    assert header.command is ProxyCommand.LOCAL
    assert header.source is None
    assert header.tlvs == ()


@pytest.mark.parametrize("family", [0x00, 0x10, 0x01, 0x02])
def test_v2_unspec_has_no_address(family: int) -> None:
    header = parse_complete(v2(family=family, block=inet_block()))
    assert header.command is ProxyCommand.PROXY
    assert header.source is None
    assert header.destination is None


def test_v2_length_at_limit_passes() -> None:
    block = inet_block() + tlv(0xE0, b"x" * (MAX_V2_LENGTH - 12 - 3))
    header = parse_complete(v2(block=block))
    assert len(header.tlvs[0][1]) == MAX_V2_LENGTH - 15


def test_v2_incomplete_returns_none() -> None:
    data = v2(block=inet_block())
    parser = ProxyHeaderParser()
    assert parser.feed(data[:15]) is None
    assert parser.feed(data[15:-1]) is None
    assert parser.feed(data[-1:]) is not None


BAD_V2_HEADERS = {
    "signature typo": V2_SIGNATURE[:11] + b"\x0b" + b"\x21\x11\x00\x00",
    "signature with LF first": b"\n\r\n\r\x00\r\nQUIT\n\x21\x11\x00\x00",
    "protocol version 1": v2(version_command=0x11, block=inet_block()),
    "protocol version 3": v2(version_command=0x31, block=inet_block()),
    "command 2": v2(version_command=0x22, block=inet_block()),
    "command 15": v2(version_command=0x2F, block=inet_block()),
    "family 4": v2(family=0x41, block=inet_block()),
    "family 15": v2(family=0xF1, block=inet_block()),
    "transport 3": v2(family=0x13, block=inet_block()),
    "length over limit": v2(block=inet_block(), length=MAX_V2_LENGTH + 1),
    "length 65535": v2(block=inet_block(), length=0xFFFF),
    "IPv4 block short": v2(block=inet_block()[:11]),
    "IPv6 block short": v2(family=0x21, block=inet_block()),
    "UNIX block short": v2(family=0x31, block=b"\x00" * 215),
    "TLV one byte": v2(block=inet_block() + b"\x01"),
    "TLV two bytes": v2(block=inet_block() + b"\x01\x00"),
    "TLV overrun by one": v2(block=inet_block() + b"\x01\x00\x05abcd"),
    "TLV overrun far": v2(block=inet_block() + b"\x01\xff\xffabcd"),
    "second TLV overrun": v2(block=inet_block() + tlv(4, b"") + b"\x05\x00\x02a"),
}


@pytest.mark.parametrize("data", BAD_V2_HEADERS.values(), ids=BAD_V2_HEADERS.keys())
def test_v2_malformed_header_raises(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        ProxyHeaderParser().feed(data)


@pytest.mark.parametrize("data", BAD_V2_HEADERS.values(), ids=BAD_V2_HEADERS.keys())
def test_v2_malformed_header_raises_bytewise(data: bytes) -> None:
    parser = ProxyHeaderParser()
    with pytest.raises(ProxyHeaderError):
        for byte in data:
            parser.feed(bytes([byte]))


def test_v2_length_over_limit_fails_early() -> None:
    # The error comes with the length field, before the announced bytes.
    data = v2(length=MAX_V2_LENGTH + 1)
    assert len(data) == 16
    with pytest.raises(ProxyHeaderError, match="exceeds the maximum of 1024"):
        ProxyHeaderParser().feed(data)


def test_v2_own_limit_applies() -> None:
    parser = ProxyHeaderParser(max_v2_length=11)
    with pytest.raises(ProxyHeaderError, match="maximum of 11 bytes"):
        parser.feed(v2(block=inet_block()))


def test_v2_tlv_overrun_names_type() -> None:
    data = v2(block=inet_block() + b"\xe1\x00\x09abc")
    with pytest.raises(ProxyHeaderError, match="type 0xe1 at byte 28"):
        ProxyHeaderParser().feed(data)


def test_v2_bad_version_fails_at_byte_13() -> None:
    parser = ProxyHeaderParser()
    assert parser.feed(V2_SIGNATURE) is None
    with pytest.raises(ProxyHeaderError, match="protocol version 1"):
        parser.feed(b"\x11")


# Signature and parser use -----------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [CLIENT_HELLO, b"a1 LOGIN", b"\x00", b"\n", b" PROXY", b"\xff"],
)
def test_bad_first_byte_raises_at_once(first: bytes) -> None:
    with pytest.raises(ProxyHeaderError, match="no PROXY protocol signature"):
        ProxyHeaderParser().feed(first[:1])


def test_tls_record_named_in_error() -> None:
    with pytest.raises(ProxyHeaderError, match="starts a TLS handshake"):
        ProxyHeaderParser().feed(CLIENT_HELLO)


def test_empty_feed_waits() -> None:
    parser = ProxyHeaderParser()
    assert parser.feed(b"") is None
    assert parser.max_read() == 15


def test_feed_after_header_raises() -> None:
    parser = ProxyHeaderParser()
    parser.feed(V1_TCP4)
    with pytest.raises(LocalProtocolError):
        parser.feed(b"more")


def test_feed_after_error_raises() -> None:
    parser = ProxyHeaderParser()
    with pytest.raises(ProxyHeaderError):
        parser.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(LocalProtocolError):
        parser.feed(V1_TCP4)


def test_remaining_before_header_raises() -> None:
    parser = ProxyHeaderParser()
    parser.feed(V1_TCP4[:10])
    with pytest.raises(LocalProtocolError):
        parser.remaining()


@pytest.mark.parametrize(
    "limits",
    [{"max_v1": 14}, {"max_v1": 0}, {"max_v2_length": -1}, {"max_v2_length": 65536}],
)
def test_invalid_limit_raises(limits: dict[str, int]) -> None:
    with pytest.raises(ConfigurationError):
        ProxyHeaderParser(**limits)


# Properties -------------------------------------------------------------------

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(min_value=0, max_value=0xFFFF)
tlv_lists = st.lists(
    st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=5
).map(tuple)


@st.composite
def v1_headers(draw: st.DrawFn) -> bytes:
    """Draw a valid version 1 line."""
    family = draw(st.sampled_from(["TCP4", "TCP6", "UNKNOWN"]))
    if family == "UNKNOWN":
        return b"PROXY UNKNOWN\r\n"
    hosts = ipv4 if family == "TCP4" else ipv6
    fields = [draw(hosts), draw(hosts), str(draw(ports)), str(draw(ports))]
    return f"PROXY {family} {' '.join(fields)}\r\n".encode()


@st.composite
def v2_headers(draw: st.DrawFn) -> bytes:
    """Draw a valid version 2 header with TLVs."""
    version6 = draw(st.booleans())
    hosts = ipv6 if version6 else ipv4
    block = inet_block(draw(hosts), draw(hosts), (draw(ports), draw(ports)))
    tlvs = b"".join(tlv(kind, value) for kind, value in draw(tlv_lists))
    family = draw(st.sampled_from([0x21, 0x22] if version6 else [0x11, 0x12]))
    return v2(family=family, block=block + tlvs)


headers = st.one_of(v1_headers(), v2_headers())

# Starts of headers, so that random bytes after them reach the later checks.
prefixes = st.sampled_from(
    [b"", b"P", b"PROXY ", b"PROXY TCP4 ", V2_SIGNATURE, V2_SIGNATURE + b"\x21\x11"]
)


def feed_in_pieces(
    data: bytes, cuts: list[int]
) -> tuple[ProxyHeader | None, bytes] | ProxyHeaderError:
    """Feed ``data`` cut at ``cuts``; return the header and the bytes after it.

    :returns: the error instead when the parser raised one.
    """
    bounds = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]
    parser = ProxyHeaderParser()
    for start, end in itertools.pairwise(bounds):
        try:
            header = parser.feed(data[start:end])
        except ProxyHeaderError as error:
            return error
        if header is not None:
            return header, parser.remaining() + data[end:]
    return None, b""


@given(header=headers, tail=st.binary(max_size=50), cuts=st.lists(st.integers(0)))
def test_any_split_gives_same_header(
    header: bytes, tail: bytes, cuts: list[int]
) -> None:
    whole = feed_in_pieces(header + tail, [])
    pieces = feed_in_pieces(header + tail, cuts)
    assert not isinstance(whole, ProxyHeaderError)
    assert whole[0] is not None
    assert pieces == whole
    assert whole[1] == tail


@given(prefix=prefixes, data=st.binary(max_size=200), cuts=st.lists(st.integers(0)))
def test_any_split_of_garbage_agrees(
    prefix: bytes, data: bytes, cuts: list[int]
) -> None:
    # Errors may differ in their message, but not in whether they happen.
    whole = feed_in_pieces(prefix + data, [])
    pieces = feed_in_pieces(prefix + data, cuts)
    assert isinstance(whole, ProxyHeaderError) == isinstance(pieces, ProxyHeaderError)
    if not isinstance(whole, ProxyHeaderError):
        assert pieces == whole


@given(header=headers, tail=st.binary(min_size=1, max_size=50))
def test_max_read_stops_at_header_end(header: bytes, tail: bytes) -> None:
    data = header + tail
    parser = ProxyHeaderParser()
    position = 0
    result = None
    while result is None:
        size = parser.max_read()
        assert size >= 1
        result = parser.feed(data[position : position + size])
        position += size
    assert position == len(header)
    assert parser.remaining() == b""


@given(
    prefix=prefixes,
    chunks=st.lists(st.binary(max_size=300), max_size=6),
)
def test_arbitrary_bytes_raise_only_header_error(
    prefix: bytes, chunks: list[bytes]
) -> None:
    parser = ProxyHeaderParser()
    try:
        for chunk in [prefix, *chunks]:
            if parser.feed(chunk) is not None:
                break
    except ProxyHeaderError:
        return


@given(prefix=prefixes, data=st.binary(max_size=2000))
def test_buffer_never_exceeds_header_size(prefix: bytes, data: bytes) -> None:
    parser = ProxyHeaderParser()
    fed = 0
    try:
        for byte in prefix + data:
            if parser.feed(bytes([byte])) is not None:
                break
            fed += 1
    except ProxyHeaderError:
        pass
    assert fed < 16 + MAX_V2_LENGTH

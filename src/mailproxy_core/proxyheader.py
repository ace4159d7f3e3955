"""The PROXY protocol header that a TCP load balancer sends first.

HAProxy's PROXY protocol (``doc/proxy-protocol.txt`` in the HAProxy
sources) lets a load balancer pass the client's address to the server
behind it. The load balancer sends one header before the first byte of the
client, so before the TLS handshake. Version 1 is one line of US-ASCII
text, version 2 a binary block that may carry type-length-value fields
(TLVs) after the addresses.

:class:`ProxyHeaderParser` parses one header from bytes fed in chunks of
any size. It raises :class:`ProxyHeaderError` as soon as the bytes cannot
start a valid header, so it never buffers more than one header. The parser
trusts every header it parses: the driver decides whose header it reads.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import Final

from .errors import ConfigurationError, LocalProtocolError, MailProxyError

#: The first bytes of a version 1 header, the space included.
V1_SIGNATURE: Final = b"PROXY "

#: The first 12 bytes of a version 2 header.
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"

#: Maximum length of a version 1 line, CRLF included. The protocol sets it:
#: ``PROXY UNKNOWN`` followed by two full IPv6 addresses and two 5-digit
#: ports is 107 bytes, and a receiver may reject any longer line.
MAX_V1_LINE: Final = 107

#: Maximum of the version 2 length field: the bytes of addresses and TLVs
#: after the 16 fixed bytes. The field allows 65535, so this bound is this
#: project's choice. It fits the largest address block (216 bytes, two
#: AF_UNIX paths). The other 808 bytes leave room for TLVs such as ALPN, the
#: authority (TLS server name), a unique ID of up to 128 bytes and the TLS
#: details that HAProxy adds.
MAX_V2_LENGTH: Final = 1024

# The shortest version 1 line: "PROXY UNKNOWN\r\n".
_V1_MIN_LINE: Final = 15

# Signature, version and command, family and protocol, length.
_V2_FIXED: Final = 16

_TLV_HEADER: Final = 3

# A version 1 port: decimal, 0 to 65535 (checked after the match), and no
# leading zero, which could be read as octal.
_V1_PORT: Final = re.compile(r"0|[1-9][0-9]{0,4}")


class ProxyHeaderError(MailProxyError):
    """The bytes are not a valid PROXY protocol header."""


class ProxyCommand(enum.IntEnum):
    """The command of a header, with its version 2 code."""

    #: The load balancer opened the connection itself, for example for a
    #: health check; the connection's own addresses apply.
    LOCAL = 0
    #: The connection relays a client, whose address the header carries.
    PROXY = 1


class _Family(enum.IntEnum):
    UNSPEC = 0
    INET = 1
    INET6 = 2
    UNIX = 3


class _Transport(enum.IntEnum):
    UNSPEC = 0
    STREAM = 1
    DGRAM = 2


# Bytes of the address block per family: two addresses, then two ports for
# the IP families.
_ADDRESS_BLOCK: Final = {_Family.INET: 12, _Family.INET6: 36, _Family.UNIX: 216}

#: An IP address in text form and a port.
Address = tuple[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyHeader:
    """One parsed PROXY protocol header.

    :param version: 1 (text) or 2 (binary).
    :param command: :attr:`ProxyCommand.PROXY` for a relayed client;
        version 1 headers always have it.
    :param source: the client's address and port, or ``None`` when the
        header carries no IP address: the ``LOCAL`` command, version 1
        ``UNKNOWN``, and version 2 ``AF_UNSPEC``, ``UNSPEC`` transport or
        ``AF_UNIX``. The driver then uses the connection's own peer.
    :param destination: the address and port that the client connected
        to, or ``None`` whenever ``source`` is ``None``.
    :param tlvs: the version 2 TLVs as ``(type, value)`` pairs in header
        order, none of them interpreted. A CRC32C TLV is not verified.
    """

    version: int
    command: ProxyCommand
    source: Address | None
    destination: Address | None
    tlvs: tuple[tuple[int, bytes], ...] = ()


class ProxyHeaderParser:
    """Parses one PROXY protocol header, version 1 or 2, from fed bytes.

    Feed the connection's first bytes to :meth:`feed` until it returns the
    header. The bytes after the header are in :meth:`remaining` and belong
    to the next protocol, such as the TLS handshake. A driver that cannot
    give those bytes back can read at most :meth:`max_read` bytes at a
    time, which never reaches past the header.

    :param max_v1: maximum length of a version 1 line in bytes, CRLF
        included; default :data:`MAX_V1_LINE`, the protocol's maximum.
    :param max_v2_length: maximum of the version 2 length field in bytes;
        default :data:`MAX_V2_LENGTH`, this project's choice.
    :raises ConfigurationError: when a limit is below the shortest header
        it must admit.
    """

    def __init__(
        self, *, max_v1: int = MAX_V1_LINE, max_v2_length: int = MAX_V2_LENGTH
    ) -> None:
        if max_v1 < _V1_MIN_LINE:
            raise ConfigurationError(
                f"max_v1 = {max_v1} is invalid; use {_V1_MIN_LINE} or more"
            )
        if not 0 <= max_v2_length <= 0xFFFF:
            raise ConfigurationError(
                f"max_v2_length = {max_v2_length} is invalid; use 0 to 65535"
            )
        self._max_v1 = max_v1
        self._max_v2_length = max_v2_length
        self._buffer = b""
        self._header: ProxyHeader | None = None
        self._remaining = b""
        self._failed = False

    def feed(self, data: bytes) -> ProxyHeader | None:
        """Add received bytes and return the header once it is complete.

        :returns: the header, or ``None`` while it is incomplete.
        :raises ProxyHeaderError: when the bytes cannot be a valid header.
        :raises LocalProtocolError: after the header or an error.
        """
        if self._header is not None or self._failed:
            raise LocalProtocolError("the PROXY header is already parsed or failed")
        self._buffer += data
        try:
            parsed = self._parse()
        except ProxyHeaderError:
            self._failed = True
            raise
        if parsed is None:
            return None

        header, end = parsed
        self._header = header
        self._remaining = self._buffer[end:]
        self._buffer = b""
        return header

    def remaining(self) -> bytes:
        """Return the bytes fed after the end of the header.

        :raises LocalProtocolError: before the header is complete.
        """
        if self._header is None:
            raise LocalProtocolError("the PROXY header is not complete yet")
        return self._remaining

    def max_read(self) -> int:
        """Return how many bytes can be fed next without passing the header.

        It is at least 1 while the header is incomplete. A version 1 line
        ends at an unknown place, so this is small, 2 bytes, in the middle
        of such a line. Version 2 gives the exact rest once its length
        field arrived.
        """
        buffer = self._buffer
        if not buffer:
            return _V1_MIN_LINE
        if buffer.startswith(b"P"):
            if buffer.endswith(b"\r"):
                return 1
            return max(2, _V1_MIN_LINE - len(buffer))
        if len(buffer) < _V2_FIXED:
            return _V2_FIXED - len(buffer)
        return max(1, _V2_FIXED + _v2_length(buffer) - len(buffer))

    def _parse(self) -> tuple[ProxyHeader, int] | None:
        buffer = self._buffer
        if not buffer:
            return None
        if buffer.startswith(b"P"):
            _check_prefix(buffer, V1_SIGNATURE, 1)
            return _parse_v1(buffer, self._max_v1)
        if buffer.startswith(b"\r"):
            _check_prefix(buffer, V2_SIGNATURE, 2)
            return _parse_v2(buffer, self._max_v2_length)
        raise ProxyHeaderError(_describe_bad_start(buffer[0]))


def _describe_bad_start(first: int) -> str:
    message = f"no PROXY protocol signature: the first byte is 0x{first:02x}"
    if first == 0x16:
        # 0x16 is the record type of a TLS handshake.
        message += ", which starts a TLS handshake, so the peer sent no header"
    return message


def _check_prefix(buffer: bytes, signature: bytes, version: int) -> None:
    size = min(len(buffer), len(signature))
    if buffer[:size] != signature[:size]:
        raise ProxyHeaderError(f"invalid version {version} signature")


# Version 1 -------------------------------------------------------------------


def _parse_v1(buffer: bytes, max_line: int) -> tuple[ProxyHeader, int] | None:
    newline = buffer.find(b"\n")
    if newline < 0:
        _check_incomplete_v1(buffer, max_line)
        return None

    end = newline + 1
    if end > max_line:
        raise _v1_too_long(max_line)
    line = buffer[:end]
    if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
        raise ProxyHeaderError("version 1 line contains a CR or LF outside its CRLF")
    return _parse_v1_line(line[:-2]), end


def _check_incomplete_v1(buffer: bytes, max_line: int) -> None:
    # Fail as soon as the line can no longer end in time, so that no more
    # than max_line bytes are ever buffered.
    room = max_line - len(buffer)
    if room < 1 or (room < 2 and not buffer.endswith(b"\r")):
        raise _v1_too_long(max_line)
    carriage_return = buffer.find(b"\r")
    if 0 <= carriage_return < len(buffer) - 1:
        raise ProxyHeaderError("version 1 line contains a CR or LF outside its CRLF")


def _v1_too_long(max_line: int) -> ProxyHeaderError:
    return ProxyHeaderError(
        f"version 1 line has no CRLF within the maximum of {max_line} bytes"
    )


def _parse_v1_line(line: bytes) -> ProxyHeader:
    fields = line.split(b" ")
    family = fields[1]
    if family == b"UNKNOWN":
        # The protocol requires receivers to ignore the rest of an UNKNOWN line.
        return ProxyHeader(
            version=1, command=ProxyCommand.PROXY, source=None, destination=None
        )
    if family not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError(
            f"version 1 protocol {_show(family)} is invalid; "
            "expected TCP4, TCP6 or UNKNOWN"
        )
    if len(fields) != 6:
        raise ProxyHeaderError(
            "version 1 line must have 6 fields separated by single spaces, "
            f"found {len(fields)}"
        )
    return _v1_addresses(family, fields[2:])


def _v1_addresses(family: bytes, fields: list[bytes]) -> ProxyHeader:
    source_host, destination_host, source_port, destination_port = fields
    version6 = family == b"TCP6"
    source = (_v1_host(source_host, version6), _v1_port(source_port))
    destination = (_v1_host(destination_host, version6), _v1_port(destination_port))
    return ProxyHeader(
        version=1, command=ProxyCommand.PROXY, source=source, destination=destination
    )


def _v1_host(field: bytes, version6: bool) -> str:
    kind = "IPv6" if version6 else "IPv4"
    error = ProxyHeaderError(f"version 1 {kind} address {_show(field)} is invalid")
    text = _ascii(field, error)

    # The protocol allows only hexadecimal groups in IPv6 addresses, so no
    # dotted IPv4 tail and no scope such as %eth0.
    if version6 and ("." in text or "%" in text):
        raise error
    try:
        address = (ipaddress.IPv6Address if version6 else ipaddress.IPv4Address)(text)
    except ValueError:
        raise error from None
    return str(address)


def _v1_port(field: bytes) -> int:
    error = ProxyHeaderError(
        f"version 1 port {_show(field)} is invalid; use 0 to 65535 without "
        "leading zeros"
    )
    text = _ascii(field, error)
    if not _V1_PORT.fullmatch(text) or int(text) > 0xFFFF:
        raise error
    return int(text)


def _ascii(field: bytes, error: ProxyHeaderError) -> str:
    try:
        return field.decode("ascii")
    except UnicodeDecodeError:
        raise error from None


def _show(field: bytes) -> str:
    # At most 40 bytes of a field, so an error line stays short.
    return repr(field[:40])[1:]


# Version 2 -------------------------------------------------------------------


def _parse_v2(buffer: bytes, max_length: int) -> tuple[ProxyHeader, int] | None:
    command = _v2_command(buffer)
    if command is None or len(buffer) < _V2_FIXED:
        return None

    length = _v2_length(buffer)
    if length > max_length:
        raise ProxyHeaderError(
            f"version 2 length {length} exceeds the maximum of {max_length} bytes"
        )
    end = _V2_FIXED + length
    if len(buffer) < end:
        return None
    block = buffer[_V2_FIXED:end]
    return _v2_header(command, buffer[13], block), end


def _v2_length(buffer: bytes) -> int:
    return int.from_bytes(buffer[14:16], "big")


def _v2_command(buffer: bytes) -> ProxyCommand | None:
    # Each fixed byte is checked as soon as it arrives, so a bad header
    # fails before its length field is read.
    if len(buffer) <= 12:
        return None
    version, code = buffer[12] >> 4, buffer[12] & 0x0F
    if version != 2:
        raise ProxyHeaderError(f"version 2 header has protocol version {version}")
    if code not in (ProxyCommand.LOCAL, ProxyCommand.PROXY):
        raise ProxyHeaderError(f"version 2 command 0x{code:x} is invalid")
    command = ProxyCommand(code)
    if len(buffer) > 13 and command is ProxyCommand.PROXY:
        _v2_family(buffer[13])
    return command


def _v2_family(byte: int) -> tuple[_Family, _Transport]:
    try:
        return _Family(byte >> 4), _Transport(byte & 0x0F)
    except ValueError:
        raise ProxyHeaderError(
            f"version 2 address family and protocol 0x{byte:02x} are invalid"
        ) from None


def _v2_header(command: ProxyCommand, family_byte: int, block: bytes) -> ProxyHeader:
    # The protocol requires receivers of LOCAL to ignore the whole block,
    # family included. Without a known address family the start of the
    # TLVs is unknown. So neither case yields TLVs.
    empty = ProxyHeader(version=2, command=command, source=None, destination=None)
    if command is ProxyCommand.LOCAL:
        return empty
    family, transport = _v2_family(family_byte)
    if family is _Family.UNSPEC or transport is _Transport.UNSPEC:
        return empty

    size = _ADDRESS_BLOCK[family]
    if len(block) < size:
        raise ProxyHeaderError(
            f"version 2 {family.name} address block needs {size} bytes, "
            f"but the length is {len(block)}"
        )
    tlvs = _parse_tlvs(block[size:], _V2_FIXED + size)
    if family is _Family.UNIX:
        return ProxyHeader(
            version=2, command=command, source=None, destination=None, tlvs=tlvs
        )
    source, destination = _v2_addresses(family, block)
    return ProxyHeader(
        version=2, command=command, source=source, destination=destination, tlvs=tlvs
    )


def _v2_addresses(family: _Family, block: bytes) -> tuple[Address, Address]:
    width = 4 if family is _Family.INET else 16
    kind = ipaddress.IPv4Address if family is _Family.INET else ipaddress.IPv6Address
    source_host = kind(block[:width])
    destination_host = kind(block[width : 2 * width])
    source_port, destination_port = struct.unpack_from("!HH", block, 2 * width)
    return (str(source_host), source_port), (str(destination_host), destination_port)


def _parse_tlvs(data: bytes, offset: int) -> tuple[tuple[int, bytes], ...]:
    """Split the TLV area; ``offset`` is its position in the header, for errors."""
    tlvs = []
    position = 0
    while position < len(data):
        left = len(data) - position
        if left < _TLV_HEADER:
            raise ProxyHeaderError(
                f"version 2 TLV at byte {offset + position} is truncated: "
                f"{left} bytes left, 3 needed for its type and length"
            )
        kind, size = struct.unpack_from("!BH", data, position)
        start = position + _TLV_HEADER
        if start + size > len(data):
            raise ProxyHeaderError(
                f"version 2 TLV of type 0x{kind:02x} at byte {offset + position} "
                f"has a length of {size}, but only {len(data) - start} bytes follow"
            )
        tlvs.append((kind, data[start : start + size]))
        position = start + size
    return tuple(tlvs)

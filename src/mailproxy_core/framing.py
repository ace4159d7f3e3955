"""Line framing shared by the IMAP4, POP3 and SMTP machines.

All three protocols send CRLF-terminated lines. :class:`LineBuffer` splits
the byte stream of one peer into lines and keeps its buffer bounded. On top
of it, :class:`SmtpReplyParser` assembles SMTP replies (RFC 5321 section
4.2), :class:`DotTerminatedReader` reads POP3 multi-line responses (RFC 1939
section 3), and :func:`parse_literal_suffix` finds the IMAP literal that a
line announces (RFC 9051 section 4.3).

Every error raised here on bad peer input is a :class:`FramingError`. The
errors about lines from a client contain no bytes of the input, so that a
password sent by mistake never reaches a log. :class:`MalformedReplyError`
shows the first bytes of the server's reply line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from .errors import ConfigurationError, MailProxyError

_CR: Final = 0x0D
_CRLF: Final = b"\r\n"


class FramingError(MailProxyError):
    """Base class of the errors for bytes that a peer framed wrongly."""


class LineTooLongError(FramingError):
    """A line, or the unterminated data buffered so far, exceeds its limit.

    :param limit: the maximum line length in bytes, terminator included.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"line exceeds the limit of {limit} bytes including CRLF")
        self.limit = limit


class TooManyLinesError(FramingError):
    """A multi-line SMTP reply or POP3 response has more lines than allowed.

    :param limit: the maximum number of lines.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"multi-line response exceeds the limit of {limit} lines")
        self.limit = limit


class MalformedLiteralError(FramingError, ValueError):
    """A line ends in an IMAP literal announcement that is not valid."""


class MalformedReplyError(FramingError):
    """An SMTP reply line does not follow RFC 5321 section 4.2."""


def _check_limit(name: str, value: int) -> int:
    if value < 1:
        raise ConfigurationError(f"{name} = {value} is invalid; use 1 or more")
    return value


class LineBuffer:
    """Accumulates bytes from one peer and splits off complete lines.

    A line ends with CRLF. When ``allow_bare_lf`` is true, a bare LF also
    ends a line. When it is false, a bare LF stays part of the line, as
    does any CR that is not followed by LF.

    Call :meth:`next_line` until it returns ``None`` after each
    :meth:`feed`. Then the buffer never contains more than ``max_line`` bytes
    plus the size of the last chunk fed.

    :param max_line: the maximum length of a line in bytes, terminator
        included. The protocol chooses it.
    :param allow_bare_lf: whether a LF without CR ends a line.
    :raises ConfigurationError: when ``max_line`` is less than 1.
    """

    def __init__(self, *, max_line: int, allow_bare_lf: bool = True) -> None:
        self._buffer = bytearray()
        # No line terminator ends inside buffer[:_scanned], so the search for
        # the next one resumes there and each byte is scanned once.
        self._scanned = 0
        self._max_line = _check_limit("max_line", max_line)
        self._allow_bare_lf = allow_bare_lf

    @property
    def max_line(self) -> int:
        """The limit for the next line in bytes, terminator included.

        Setting it changes the limit from the next call of :meth:`next_line`
        on, for example after an IMAP literal.

        :raises ConfigurationError: when set to less than 1.
        """
        return self._max_line

    @max_line.setter
    def max_line(self, value: int) -> None:
        self._max_line = _check_limit("max_line", value)

    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer.

        :param data: the bytes, of any length.
        """
        self._buffer += data

    def next_line(self) -> bytes | None:
        """Remove the next complete line from the buffer.

        :returns: the line without its terminator, or ``None`` when no
            complete line is buffered.
        :raises LineTooLongError: when the next line, terminator included,
            exceeds :attr:`max_line`, or when more than :attr:`max_line`
            bytes are buffered without a terminator. The buffer is left as
            it was, so the next call raises again. The caller should end the
            connection, or call :meth:`clear`.
        """
        end = self._find_terminator()
        if end is not None:
            return self._pop_line(end)

        if len(self._buffer) > self._max_line:
            raise LineTooLongError(self._max_line)
        return None

    def _find_terminator(self) -> int | None:
        """Return the index of the LF that ends the next line, if buffered."""
        # A terminator past max_line would end a line that is too long, so
        # the search stops there and bounds the work per line.
        limit = min(len(self._buffer), self._max_line)
        while True:
            index = self._buffer.find(b"\n", self._scanned, limit)
            if index < 0:
                self._scanned = max(self._scanned, limit)
                return None

            self._scanned = index + 1
            if self._allow_bare_lf:
                return index
            if index > 0 and self._buffer[index - 1] == _CR:
                return index

    def _pop_line(self, end: int) -> bytes:
        content_end = end
        if content_end > 0 and self._buffer[content_end - 1] == _CR:
            content_end -= 1

        line = bytes(self._buffer[:content_end])
        # CPython removes a bytearray prefix by moving its start pointer,
        # without copying the rest of the buffer.
        del self._buffer[: end + 1]
        self._scanned = 0
        return line

    def read_exact(self, size: int) -> bytes | None:
        """Remove exactly ``size`` bytes, such as the data of an IMAP literal.

        The caller bounds ``size``, because the buffer grows until that many
        bytes have arrived.

        :param size: the number of bytes, 0 or more.
        :returns: the bytes, or ``None`` when fewer are buffered.
        :raises ValueError: when ``size`` is negative.
        """
        if size < 0:
            raise ValueError(f"size = {size} is invalid; use 0 or more")
        if len(self._buffer) < size:
            return None

        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._scanned = max(0, self._scanned - size)
        return data

    def take_all(self) -> bytes:
        """Remove and return every buffered byte, such as before relaying."""
        data = bytes(self._buffer)
        self.clear()
        return data

    def clear(self) -> None:
        """Discard every buffered byte."""
        self._buffer.clear()
        self._scanned = 0

    def __len__(self) -> int:
        """Return the number of buffered bytes."""
        return len(self._buffer)


#: The largest literal size: RFC 3501 ``number``, an unsigned 32-bit integer.
MAX_LITERAL_SIZE: Final = 2**32 - 1

# A brace pair at the end of the line with one token inside, such as "{12+}".
_BRACED_SUFFIX: Final = re.compile(rb"\{([^{}\s]*)\}\Z")
# An opening brace and a size at the end of the line, such as "{12+".
_UNCLOSED_SUFFIX: Final = re.compile(rb"\{[0-9]+\+?\Z")
_LITERAL_SIZE: Final = re.compile(rb"([0-9]{1,10})(\+?)")


def parse_literal_suffix(
    line: bytes, *, strict: bool = True
) -> tuple[int, bool] | None:
    """Parse the IMAP literal announcement that ends a line, if there is one.

    A line announces a literal when it ends in ``{N}`` (synchronizing, RFC
    9051 section 4.3) or ``{N+}`` (non-synchronizing, RFC 7888). RFC 9051
    allows N up to 2**63-1 (``number64``). This function accepts 1 to 10
    digits with a value up to :data:`MAX_LITERAL_SIZE`, the RFC 3501 limit.
    A ``~{N}`` literal8 (RFC 3516) has the same framing and is returned the
    same way. A ``{`` that is not part of a brace pair at the end of the
    line is text. The function does not track quoted strings, so the caller
    must not pass a line that ends inside one.

    :param line: a line without its CRLF.
    :param strict: whether a malformed announcement raises. Pass ``False``
        for server responses, whose ``resp-text`` may end in any braces,
        so that such a line counts as announcing no literal.
    :returns: ``(size, non_synchronizing)``, or ``None`` when the line
        announces no literal.
    :raises MalformedLiteralError: when ``strict`` is true and the line
        ends in a brace pair without whitespace inside that is not a valid
        size, such as ``{abc}``, ``{}``, ``{-1}`` or ``{4294967296}``, or
        ends in an unclosed announcement such as ``{12+``.
    """
    match = _BRACED_SUFFIX.search(line)
    if match is not None:
        return _parse_literal_size(match.group(1), strict=strict)

    if strict and _UNCLOSED_SUFFIX.search(line) is not None:
        raise MalformedLiteralError(
            "invalid literal announcement at the end of the line: "
            "the closing brace is missing"
        )
    return None


def _parse_literal_size(text: bytes, *, strict: bool) -> tuple[int, bool] | None:
    match = _LITERAL_SIZE.fullmatch(text)
    size = int(match.group(1)) if match is not None else -1
    if match is None or size > MAX_LITERAL_SIZE:
        if not strict:
            return None
        # The message omits the text because it may be a password.
        raise MalformedLiteralError(
            "invalid literal announcement at the end of the line: "
            f"expected {{N}} or {{N+}} with N from 0 to {MAX_LITERAL_SIZE}"
        )
    return size, match.group(2) == b"+"


@dataclass(frozen=True, slots=True)
class SmtpReply:
    """One SMTP reply, possibly of several lines (RFC 5321 section 4.2).

    :param code: the three-digit reply code.
    :param lines: the text of each line after ``NNN-`` or ``"NNN "``,
        without CRLF. A bare ``NNN`` line has the text ``b""``.
    :raises ValueError: when ``code`` is not from 200 to 599, ``lines`` is
        empty, or a line contains CR or LF.
    """

    code: int
    lines: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"code = {self.code} is invalid; use 200 to 599")
        if not self.lines:
            raise ValueError("lines is empty; a reply has at least one line")
        if any(b"\r" in line or b"\n" in line for line in self.lines):
            raise ValueError("a reply line contains CR or LF")

    def is_positive(self) -> bool:
        """Return whether the code is 2yz or 3yz."""
        return self.code < 400

    def is_positive_completion(self) -> bool:
        """Return whether the code is 2yz: the action completed."""
        return self.code // 100 == 2

    def is_positive_intermediate(self) -> bool:
        """Return whether the code is 3yz: the server expects more input."""
        return self.code // 100 == 3

    def is_transient_negative(self) -> bool:
        """Return whether the code is 4yz: the action failed for now."""
        return self.code // 100 == 4

    def is_permanent_negative(self) -> bool:
        """Return whether the code is 5yz: the action failed."""
        return self.code // 100 == 5

    @property
    def last(self) -> bytes:
        """The text of the last line, such as the base64 data of a 334 reply."""
        return self.lines[-1]

    @property
    def text(self) -> str:
        """The text of all lines joined by newlines, for logs and errors."""
        return "\n".join(
            line.decode("ascii", errors="backslashreplace") for line in self.lines
        )

    def to_bytes(self) -> bytes:
        """Serialize the reply with ``NNN-`` and ``"NNN "`` prefixes and CRLF."""
        prefix = b"%d" % self.code
        continued = [prefix + b"-" + line + _CRLF for line in self.lines[:-1]]
        return b"".join(continued) + prefix + b" " + self.last + _CRLF


def _split_reply_line(line: bytes) -> tuple[int, bool, bytes]:
    """Split a reply line into code, whether it is the last line, and text."""
    code = line[:3]
    separator = line[3:4]
    text = line[4:]
    # RFC 5321 section 4.2 forbids first digits other than 2 to 5, and
    # clients must interpret unknown codes by the first digit alone.
    if len(code) < 3 or not code.isdigit() or code[:1] not in b"2345":
        raise _reply_line_error(line, "expected a three-digit code from 200 to 599")
    if separator not in (b"", b" ", b"-"):
        raise _reply_line_error(
            line, "expected a space, a hyphen or nothing after the code"
        )
    if b"\r" in text or b"\n" in text:
        raise _reply_line_error(line, "the text contains CR or LF")
    return int(code), separator != b"-", text


def _reply_line_error(line: bytes, reason: str) -> MalformedReplyError:
    return MalformedReplyError(
        f"invalid SMTP reply line starting {line[:8]!r}: {reason}"
    )


class SmtpReplyParser:
    """Assembles SMTP replies from the bytes that a server sends.

    :param max_line: the maximum length of a reply line, code and CRLF
        included. The default 512 is the RFC 5321 section 4.5.3.1.5 limit.
    :param max_lines: the maximum number of lines in one reply. RFC 5321
        sets no limit, so the default 100 only bounds memory. It is an
        estimate that is well above the EHLO replies of common servers.
    :param allow_bare_lf: whether a LF without CR ends a line. RFC 5321
        requires CRLF, but reading replies tolerantly risks nothing.
    """

    def __init__(
        self, *, max_line: int = 512, max_lines: int = 100, allow_bare_lf: bool = True
    ) -> None:
        self._buffer = LineBuffer(max_line=max_line, allow_bare_lf=allow_bare_lf)
        self._max_lines = _check_limit("max_lines", max_lines)
        self._code = 0
        self._pending: list[bytes] = []

    def feed(self, data: bytes) -> list[SmtpReply]:
        """Add bytes from the server and return the replies they complete.

        After an error the parser state is undefined, and the caller should
        end the connection. Replies completed earlier in the same call are
        lost then.

        :param data: the bytes, split anywhere.
        :returns: the complete replies, in order, possibly none.
        :raises MalformedReplyError: when a line has no valid code, a wrong
            separator, or a code that differs from the earlier lines.
        :raises LineTooLongError: when a line exceeds ``max_line``.
        :raises TooManyLinesError: when a reply exceeds ``max_lines``.
        """
        self._buffer.feed(data)
        replies = []
        while (line := self._buffer.next_line()) is not None:
            reply = self._add_line(line)
            if reply is not None:
                replies.append(reply)
        return replies

    def _add_line(self, line: bytes) -> SmtpReply | None:
        code, is_last, text = _split_reply_line(line)
        if self._pending and code != self._code:
            raise MalformedReplyError(
                f"SMTP reply code changed from {self._code} to {code} "
                "within a multi-line reply"
            )
        if len(self._pending) >= self._max_lines:
            raise TooManyLinesError(self._max_lines)

        self._code = code
        self._pending.append(text)
        if not is_last:
            return None

        reply = SmtpReply(code, tuple(self._pending))
        self._pending = []
        return reply

    def take_all(self) -> bytes:
        """Remove and return every byte not yet returned as a reply.

        The lines of an incomplete reply come first, each terminated by
        CRLF even when the server ended it with a bare LF.
        """
        prefix = b"%d-" % self._code
        pending = b"".join(prefix + line + _CRLF for line in self._pending)
        self._pending = []
        return pending + self._buffer.take_all()


class DotTerminatedReader:
    """Reads the lines of a POP3 multi-line response (RFC 1939 section 3).

    The caller reads the ``+OK`` status line itself and then feeds the
    following bytes here. The response ends with a line that contains only
    ``.``. The reader removes the first ``.`` of every other line that
    starts with one, so ``..x`` becomes ``.x``.

    :param max_line: the maximum length of a line, CRLF included. The
        default 512 is the RFC 1939 section 3 limit for responses. Message
        content (RETR, TOP) may have longer lines, so this reader suits the
        responses read during login, such as CAPA.
    :param max_lines: the maximum number of lines in one response. RFC 1939
        sets no limit, so the default 1000 only bounds memory.
    :param allow_bare_lf: whether a LF without CR ends a line. RFC 1939
        requires CRLF, but reading responses tolerantly risks nothing.
    """

    def __init__(
        self, *, max_line: int = 512, max_lines: int = 1000, allow_bare_lf: bool = True
    ) -> None:
        self._buffer = LineBuffer(max_line=max_line, allow_bare_lf=allow_bare_lf)
        self._max_lines = _check_limit("max_lines", max_lines)
        self._lines: list[bytes] = []

    def feed(self, data: bytes) -> list[bytes] | None:
        """Add bytes from the server and return the response once complete.

        After a complete response the reader starts on the next one. Bytes
        after the terminating line stay buffered, and ``feed(b"")`` reads
        them.

        :param data: the bytes, split anywhere.
        :returns: the unstuffed lines without CRLF once the ``.`` line has
            arrived, else ``None``.
        :raises LineTooLongError: when a line exceeds ``max_line``.
        :raises TooManyLinesError: when the response exceeds ``max_lines``.
        """
        self._buffer.feed(data)
        while (line := self._buffer.next_line()) is not None:
            if line == b".":
                lines = self._lines
                self._lines = []
                return lines

            if len(self._lines) >= self._max_lines:
                raise TooManyLinesError(self._max_lines)
            # RFC 1939 strips the first "." of any other line that starts
            # with one, whether or not a second "." follows.
            self._lines.append(line[1:] if line.startswith(b".") else line)
        return None

    def take_all(self) -> bytes:
        """Remove and return every byte not yet returned as a response.

        The lines of an incomplete response come first, dot-stuffed again
        and each terminated by CRLF even when the server ended it with a
        bare LF.
        """
        pending = b"".join(_stuff_line(line) + _CRLF for line in self._lines)
        self._lines = []
        return pending + self._buffer.take_all()


def _stuff_line(line: bytes) -> bytes:
    return b"." + line if line.startswith(b".") else line

"""The client-facing SMTP machine, up to the end of AUTH.

It implements the session start of RFC 5321 with AUTH (RFC 4954),
STARTTLS (RFC 3207), PIPELINING (RFC 2920) and enhanced status codes
(RFC 3463, RFC 2034). Mail commands before authentication get
``530 5.7.0``. After a finished AUTH, further bytes are held for the
session, so commands pipelined after AUTH reach the upstream in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ..machine import (
    ClientMachine,
    ClientOutput,
    CloseRequested,
    Reply,
    TlsRequested,
    UpstreamReply,
    Violation,
)
from ..sasl import Mechanism
from ..settings import Limits, SessionSettings

# Commands that need authentication at a submission server (RFC 4954
# section 6 names 530 5.7.0 for them).
_MAIL_COMMANDS: Final = frozenset(b"MAIL RCPT DATA BDAT VRFY EXPN ETRN".split())

_Handler = Callable[[bytes], list[ClientOutput]]


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpOptions:
    """The host name and extensions of the SMTP listener's greeting and EHLO.

    :param hostname: the name in the greeting and the EHLO reply.
    :param size: the ``SIZE`` limit in octets (RFC 1870), or ``None`` to
        announce none.
    :param eightbitmime: announce ``8BITMIME`` (RFC 6152).
    :param smtputf8: announce ``SMTPUTF8`` (RFC 6531).

    SMTP clients do not repeat EHLO after AUTH, so every extension
    announced here must also be offered by each upstream.
    """

    hostname: str = "mailproxy"
    size: int | None = None
    eightbitmime: bool = True
    smtputf8: bool = False


class SmtpClientMachine(ClientMachine):
    """The proxy's server side toward an SMTP client, before AUTH.

    :param settings: the listener's settings.
    :param limits: bounds on command lines, SASL lines, held bytes and
        commands.
    :param options: the announced host name and extensions.
    """

    CHALLENGE_PREFIX = b"334 "
    SASL_BAD_INITIAL = b"501 5.5.2 Invalid SASL initial response"
    SASL_BAD_RESPONSE = b"501 5.5.2 Invalid SASL response"
    # RFC 4954 section 4: a cancelled exchange gets 501.
    SASL_CANCELLED = b"501 5.0.0 Authentication cancelled"
    LINE_TOO_LONG = b"500 5.5.2 Line too long"

    def __init__(
        self, settings: SessionSettings, limits: Limits, options: SmtpOptions
    ) -> None:
        # Framing allows SASL-sized lines, so that AUTH with a long initial
        # response fits; _command applies the shorter limit to the rest.
        super().__init__(settings, limits, max_line=limits.max_sasl_line)
        self._options = options
        self._tls_active = not settings.starttls_required
        self._commands = 0
        #: The domain from the client's EHLO or HELO, or ``None`` before it.
        self.client_name: str | None = None
        self._extended = False
        self._handlers: dict[bytes, _Handler] = {
            b"EHLO": self._ehlo,
            b"HELO": self._helo,
            b"AUTH": self._auth,
            b"STARTTLS": self._starttls,
            b"RSET": self._rset,
            b"NOOP": self._noop,
            b"QUIT": self._quit,
            b"HELP": self._help,
        }

    # ClientMachine interface -------------------------------------------

    def greeting(self) -> bytes:
        name = self._options.hostname.encode()
        return b"220 " + name + b" ESMTP " + self._settings.greeting.encode() + b"\r\n"

    def tls_established(self) -> list[ClientOutput]:
        # RFC 3207 section 4.2: the client must start over with EHLO.
        self._tls_active = True
        self.client_name = None
        self._extended = False
        return []

    def login_succeeded(self, reply: UpstreamReply) -> bytes:
        self._holding = False
        lines = [*reply.untagged, reply.text]
        return b"".join(line + b"\r\n" for line in lines)

    def login_failed(
        self, reply: UpstreamReply | None, *, unavailable: bool = False
    ) -> bytes:
        if reply is not None:
            return b"".join(line + b"\r\n" for line in (*reply.untagged, reply.text))
        if unavailable:
            return b"454 4.7.0 Temporary authentication failure\r\n"
        return b"535 5.7.8 Authentication credentials invalid\r\n"

    def goodbye(self, text: str) -> bytes:
        name = self._options.hostname.encode()
        return b"421 4.3.2 " + name + b" " + text.encode() + b"\r\n"

    def _overflow_reply(self) -> bytes:
        return b"421 4.7.0 Too much data before authentication"

    def extensions(self) -> list[bytes]:
        """Return the EHLO keywords, in the order they are announced."""
        options = self._options
        keywords = [b"PIPELINING"]
        if options.size is not None:
            keywords.append(b"SIZE %d" % options.size)
        if options.eightbitmime:
            keywords.append(b"8BITMIME")
        if options.smtputf8:
            keywords.append(b"SMTPUTF8")
        keywords.append(b"ENHANCEDSTATUSCODES")
        if self._tls_active:
            keywords.append(b"AUTH " + b" ".join(self.sasl_mechanisms()))
        else:
            keywords.append(b"STARTTLS")
        return keywords

    # Framing and dispatch -----------------------------------------------

    def _command(self, line: bytes) -> list[ClientOutput]:
        self._commands += 1
        if self._commands > self._limits.max_commands:
            return self._fatal(
                b"421 4.7.0 Too many commands before authentication", "command limit"
            )
        verb, _, argument = line.partition(b" ")
        verb = verb.upper()
        # RFC 5321 section 4.5.3.1.4: 512 octets with CRLF. Accepting a
        # longer AUTH line with an initial response is a deliberate leniency
        # for OAuth bearer tokens, bounded by the SASL line limit.
        if len(line) + 2 > self._limits.max_line and verb != b"AUTH":
            return self._fatal(self.LINE_TOO_LONG, "line too long")
        if b"\x00" in line:
            return self._error(b"500 5.5.2 NUL in command")
        handler = self._handlers.get(verb)
        if handler is not None:
            return handler(argument.strip())
        if verb in _MAIL_COMMANDS:
            return self._error(b"530 5.7.0 Authentication required")
        return self._error(b"500 5.5.2 Command not recognized")

    # Commands ------------------------------------------------------------

    def _ehlo(self, argument: bytes) -> list[ClientOutput]:
        if not argument:
            return self._error(b"501 5.5.4 Syntax: EHLO hostname")
        self.client_name = argument.split()[0].decode("ascii", errors="replace")
        self._extended = True
        lines = [self._options.hostname.encode(), *self.extensions()]
        return [Reply(data=_multiline(250, lines))]

    def _helo(self, argument: bytes) -> list[ClientOutput]:
        if not argument:
            return self._error(b"501 5.5.4 Syntax: HELO hostname")
        self.client_name = argument.split()[0].decode("ascii", errors="replace")
        self._extended = False
        return [Reply(data=b"250 " + self._options.hostname.encode() + b"\r\n")]

    def _auth(self, argument: bytes) -> list[ClientOutput]:
        if not self._tls_active:
            return self._error(b"530 5.7.0 Must issue a STARTTLS command first")
        if not self._extended:
            return self._error(b"503 5.5.1 Send EHLO first")
        name, _, initial = argument.partition(b" ")
        mechanism = Mechanism.parse(name)
        if mechanism is None or name.upper() not in self.sasl_mechanisms():
            return self._error(b"504 5.5.4 Unrecognized authentication type")
        return self._start_sasl(mechanism, initial.strip() or None)

    def _starttls(self, argument: bytes) -> list[ClientOutput]:
        if argument:
            return self._error(b"501 5.5.4 STARTTLS takes no arguments")
        if self._tls_active:
            return self._error(b"503 5.5.1 TLS is already active")
        # Bytes pipelined after STARTTLS came in clear text and could have
        # been injected, so they are dropped (RFC 3207 section 4.2).
        self._buffer.clear()
        return [Reply(data=b"220 2.0.0 Ready to start TLS\r\n"), TlsRequested()]

    def _rset(self, argument: bytes) -> list[ClientOutput]:
        return [Reply(data=b"250 2.0.0 OK\r\n")]

    def _noop(self, argument: bytes) -> list[ClientOutput]:
        return [Reply(data=b"250 2.0.0 OK\r\n")]

    def _help(self, argument: bytes) -> list[ClientOutput]:
        return [Reply(data=b"214 2.0.0 Authenticate with AUTH, then send mail\r\n")]

    def _quit(self, argument: bytes) -> list[ClientOutput]:
        name = self._options.hostname.encode()
        data = b"221 2.0.0 " + name + b" closing connection\r\n"
        return [Reply(data=data), CloseRequested(reason="client sent QUIT")]

    # Helpers -----------------------------------------------------------------

    def _error(self, reply: bytes) -> list[ClientOutput]:
        message = reply.decode(errors="replace")
        return [Reply(data=reply + b"\r\n"), Violation(message=message, fatal=False)]


def _multiline(code: int, lines: list[bytes]) -> bytes:
    prefix = b"%d" % code
    head = [prefix + b"-" + line + b"\r\n" for line in lines[:-1]]
    return b"".join(head) + prefix + b" " + lines[-1] + b"\r\n"

"""The client-facing POP3 machine, up to the end of the login.

It implements the AUTHORIZATION state of RFC 1939 with the extensions of
RFC 2449 (CAPA, response codes, pipelining), RFC 5034 (AUTH with initial
response and ``*`` cancel) and RFC 2595 (STLS). Every other command gets
``-ERR``. After PASS or a finished AUTH, further bytes are held for the
session, so USER and PASS pipelined in one segment work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from ..machine import (
    ClientMachine,
    ClientOutput,
    CloseRequested,
    LoginRequested,
    Reply,
    TlsRequested,
    UpstreamReply,
    Violation,
)
from ..sasl import Mechanism
from ..secrets import Secret
from ..settings import Limits, SessionSettings

# Commands of the TRANSACTION state (RFC 1939 section 5, RFC 2449); before
# login they get "-ERR Log in first".
_LATER_COMMANDS: Final = frozenset(
    b"STAT LIST RETR DELE NOOP RSET TOP UIDL LAST".split()
)

_Handler = Callable[[bytes], list[ClientOutput]]


class PopClientMachine(ClientMachine):
    """The proxy's server side toward a POP3 client, before login.

    :param settings: the listener's settings.
    :param limits: bounds on command lines, SASL lines, held bytes and
        commands.
    """

    SASL_BAD_INITIAL = b"-ERR Invalid SASL initial response"
    SASL_BAD_RESPONSE = b"-ERR Invalid SASL response"
    SASL_CANCELLED = b"-ERR Authentication cancelled"
    LINE_TOO_LONG = b"-ERR Line too long"

    def __init__(self, settings: SessionSettings, limits: Limits) -> None:
        # Framing allows SASL-sized lines, so that AUTH with a long initial
        # response fits; _command applies the shorter limit to the rest.
        super().__init__(settings, limits, max_line=limits.max_sasl_line)
        self._user: str | None = None
        self._tls_active = not settings.starttls_required
        self._commands = 0
        self._handlers: dict[bytes, _Handler] = {
            b"CAPA": self._capa,
            b"USER": self._user_command,
            b"PASS": self._pass,
            b"AUTH": self._auth,
            b"STLS": self._stls,
            b"QUIT": self._quit,
        }

    # ClientMachine interface -------------------------------------------

    def greeting(self) -> bytes:
        # No APOP timestamp: APOP sends a digest, and the proxy needs the
        # clear mail password to split it and log in upstream.
        return b"+OK " + self._settings.greeting.encode() + b"\r\n"

    def tls_established(self) -> list[ClientOutput]:
        self._tls_active = True
        return []

    def login_succeeded(self, reply: UpstreamReply) -> bytes:
        self._holding = False
        return reply.text + b"\r\n"

    def login_failed(
        self, reply: UpstreamReply | None, *, unavailable: bool = False
    ) -> bytes:
        self._user = None
        if reply is not None:
            return reply.text + b"\r\n"
        if unavailable:
            # RFC 3206 section 4: SYS/TEMP is a transient system failure.
            return b"-ERR [SYS/TEMP] Mail server is not available\r\n"
        return b"-ERR [AUTH] Authentication failed\r\n"

    def goodbye(self, text: str) -> bytes:
        return b"-ERR " + text.encode() + b"\r\n"

    def _overflow_reply(self) -> bytes:
        return b"-ERR Too much data before authentication"

    # Framing and dispatch -----------------------------------------------

    def _command(self, line: bytes) -> list[ClientOutput]:
        self._commands += 1
        if self._commands > self._limits.max_commands:
            return self._fatal(b"-ERR Too many commands before login", "command limit")
        name, _, argument = line.partition(b" ")
        # RFC 2449 section 4: 255 octets with CRLF. Accepting a longer AUTH
        # line with an initial response is a deliberate leniency for OAuth
        # bearer tokens, bounded by the SASL line limit.
        if len(line) + 2 > self._limits.max_line and name.upper() != b"AUTH":
            return self._fatal(self.LINE_TOO_LONG, "line too long")
        if b"\x00" in line:
            return self._error(b"NUL in command")
        handler = self._handlers.get(name.upper())
        if handler is not None:
            return handler(argument)
        if name.upper() in _LATER_COMMANDS:
            return self._error(b"Log in first")
        if name.upper() == b"APOP":
            # APOP sends a digest; the proxy needs the clear password.
            return self._error(b"APOP is not supported; use USER and PASS or AUTH")
        return self._error(b"Unknown command")

    # Commands ------------------------------------------------------------

    def _capa(self, argument: bytes) -> list[ClientOutput]:
        # RFC 2449 section 5: the capability list is a multi-line response.
        lines = [b"+OK Capability list follows"]
        if self._tls_active:
            lines += [b"USER", b"SASL " + b" ".join(self.sasl_mechanisms())]
        else:
            lines.append(b"STLS")
        lines += [
            b"RESP-CODES",
            b"AUTH-RESP-CODE",
            b"PIPELINING",
            b"IMPLEMENTATION mailproxy",
            b".",
        ]
        return [Reply(data=b"".join(line + b"\r\n" for line in lines))]

    def _user_command(self, argument: bytes) -> list[ClientOutput]:
        if not self._tls_active:
            return self._error(b"Use STLS first")
        if not argument:
            return self._error(b"USER needs a user name")
        try:
            self._user = argument.decode("utf-8")
        except UnicodeDecodeError:
            return self._error(b"User name is not valid UTF-8")
        return [Reply(data=b"+OK Send your password\r\n")]

    def _pass(self, argument: bytes) -> list[ClientOutput]:
        if self._user is None:
            return self._error(b"Send USER first")
        # RFC 1939 section 7 lets a password contain spaces, so PASS takes
        # the rest of the line.
        try:
            password = argument.decode("utf-8")
        except UnicodeDecodeError:
            self._user = None
            return self._error(b"Password is not valid UTF-8")
        login = LoginRequested(
            username=self._user, password=Secret(password), mechanism="USER"
        )
        self._holding = True
        return [login]

    def _auth(self, argument: bytes) -> list[ClientOutput]:
        if not self._tls_active:
            return self._error(b"Use STLS first")
        if not argument:
            # A bare AUTH lists the mechanisms, as RFC 1734 clients expect.
            names = self.sasl_mechanisms()
            data = b"+OK\r\n" + b"".join(n + b"\r\n" for n in names) + b".\r\n"
            return [Reply(data=data)]
        name, _, initial = argument.partition(b" ")
        mechanism = Mechanism.parse(name)
        if mechanism is None or name.upper() not in self.sasl_mechanisms():
            return self._error(b"Unsupported authentication mechanism")
        return self._start_sasl(mechanism, initial or None)

    def _stls(self, argument: bytes) -> list[ClientOutput]:
        if self._tls_active:
            return self._error(b"TLS is already active")
        # Bytes pipelined after STLS came in clear text and could have been
        # injected, so they are dropped (RFC 2595 section 4).
        self._buffer.clear()
        return [Reply(data=b"+OK Begin TLS negotiation\r\n"), TlsRequested()]

    def _quit(self, argument: bytes) -> list[ClientOutput]:
        data = b"+OK mailproxy signing off\r\n"
        return [Reply(data=data), CloseRequested(reason="client sent QUIT")]

    # Helpers -----------------------------------------------------------------

    def _error(self, text: bytes) -> list[ClientOutput]:
        reply = Reply(data=b"-ERR " + text + b"\r\n")
        return [reply, Violation(message=text.decode(errors="replace"), fatal=False)]

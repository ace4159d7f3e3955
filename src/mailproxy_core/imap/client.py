"""The client-facing IMAP4 machine, up to the end of the login.

It implements the not-authenticated state of RFC 9051 and RFC 3501:
CAPABILITY, NOOP, LOGOUT, ID, STARTTLS, LOGIN with atoms, quoted strings
and both kinds of literal (RFC 7888), and AUTHENTICATE with SASL-IR
(RFC 4959), continuation and ``*`` cancel. Every other command gets
``BAD``. After a login command, further bytes are held for the session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from ..errors import MailProxyError
from ..framing import parse_literal_suffix
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
from .syntax import (
    Atom,
    ImapSyntaxError,
    Paren,
    String,
    Token,
    astring_text,
    is_valid_tag,
    split_tag,
    tokenize,
)

# Commands of the authenticated and selected states (RFC 9051 section 6,
# RFC 3501 section 6, and common extensions); before login they get BAD.
_LATER_COMMANDS: Final = frozenset(
    b"APPEND CHECK CLOSE COPY CREATE DELETE ENABLE EXAMINE EXPUNGE FETCH GETQUOTA"
    b" GETQUOTAROOT IDLE LIST LSUB MOVE NAMESPACE RENAME SEARCH SELECT SETQUOTA"
    b" SORT STATUS STORE SUBSCRIBE THREAD UID UNSELECT UNSUBSCRIBE".split()
)

_Handler = Callable[[bytes, list[Token]], list[ClientOutput]]


class ImapClientMachine(ClientMachine):
    """The proxy's server side toward an IMAP client, before login.

    :param settings: the listener's settings.
    :param limits: bounds on lines, SASL responses, literals, buffered
        bytes and commands.
    :param imap4rev2: advertise ``IMAP4rev2`` (RFC 9051) as well as
        ``IMAP4rev1``; only when every upstream supports it.
    """

    # RFC 9051 section 6.2.2: BAD ends an exchange that failed or was
    # cancelled, under the AUTHENTICATE command's tag.
    SASL_BAD_INITIAL = b"BAD Invalid SASL initial response"
    SASL_BAD_RESPONSE = b"BAD Invalid SASL response"
    SASL_CANCELLED = b"BAD Authentication cancelled"
    LINE_TOO_LONG = b"* BAD Line too long"

    def __init__(
        self, settings: SessionSettings, limits: Limits, *, imap4rev2: bool = False
    ) -> None:
        # Framing allows SASL-sized lines, so that AUTHENTICATE with a long
        # initial response (RFC 4959) fits; _command_line applies the
        # command-line limit to every other line.
        super().__init__(
            settings, limits, max_line=max(limits.max_line, limits.max_sasl_line)
        )
        self._imap4rev2 = imap4rev2
        self._segments: list[bytes] = []
        self._literals: list[bytes] = []
        self._literal_size: int | None = None
        self._command_size = 0
        self._tag = b""
        self._tls_active = not settings.starttls_required
        self._commands = 0
        self._handlers: dict[bytes, _Handler] = {
            b"CAPABILITY": self._capability,
            b"NOOP": self._noop,
            b"LOGOUT": self._logout,
            b"ID": self._id,
            b"STARTTLS": self._starttls,
            b"LOGIN": self._login,
            b"AUTHENTICATE": self._authenticate,
        }

    # ClientMachine interface -------------------------------------------

    def greeting(self) -> bytes:
        capabilities = b" ".join(self.capabilities())
        text = self._settings.greeting.encode()
        return b"* OK [CAPABILITY " + capabilities + b"] " + text + b"\r\n"

    def tls_established(self) -> list[ClientOutput]:
        self._tls_active = True
        return []

    def login_succeeded(self, reply: UpstreamReply) -> bytes:
        lines = [*reply.untagged, self._tag + b" " + reply.text]
        self._holding = False
        return b"".join(line + b"\r\n" for line in lines)

    def login_failed(
        self, reply: UpstreamReply | None, *, unavailable: bool = False
    ) -> bytes:
        if reply is not None:
            text = reply.text
        elif unavailable:
            text = b"NO [UNAVAILABLE] Mail server is not available"
        else:
            text = b"NO [AUTHENTICATIONFAILED] Authentication failed"
        return self._tag + b" " + text + b"\r\n"

    def goodbye(self, text: str) -> bytes:
        return b"* BYE " + text.encode() + b"\r\n"

    def _overflow_reply(self) -> bytes:
        return b"* BYE Too much data before authentication"

    def capabilities(self) -> list[bytes]:
        """Return the capabilities that the proxy advertises before login.

        Only what the proxy itself handles: after the login the client gets
        the upstream's own list in the tagged ``OK``.
        """
        names = [b"IMAP4rev1"]
        if self._imap4rev2:
            names.append(b"IMAP4rev2")
        names += [b"SASL-IR", b"LITERAL+", b"ID"]
        if not self._tls_active:
            return [*names, b"STARTTLS", b"LOGINDISABLED"]
        return [*names, *(b"AUTH=" + name for name in self.sasl_mechanisms())]

    # Framing -------------------------------------------------------------

    def _next_step(self) -> list[ClientOutput] | None:
        if self._literal_size is not None:
            literal = self._buffer.read_exact(self._literal_size)
            if literal is None:
                return None
            self._literals.append(literal)
            self._command_size += len(literal)
            self._literal_size = None
            return []
        line = self._buffer.next_line()
        if line is None:
            return None
        if self._sasl is not None:
            return self._sasl_response(line)
        return self._command_line(line)

    def _command_line(self, line: bytes) -> list[ClientOutput]:
        if len(line) + 2 > self._limits.max_line and not _is_authenticate(line):
            return self._fatal(self.LINE_TOO_LONG, "line too long")
        try:
            announced = parse_literal_suffix(line)
        except MailProxyError:
            return self._bad_command(line, b"Invalid literal")
        self._command_size += len(line)
        if self._command_size > self._limits.max_buffered:
            return self._fatal(b"* BYE Command too long", "command size limit")
        if announced is None:
            self._segments.append(line)
            return self._run_command()
        size, non_synchronizing = announced
        if size > self._limits.max_literal:
            tag = split_tag(self._segments[0] if self._segments else line) or b"*"
            reply = tag + b" BAD [TOOBIG] Literal too large before authentication"
            return self._fatal(reply, "literal too large")
        self._segments.append(line[: line.rindex(b"{")])
        self._literal_size = size
        if non_synchronizing:
            return []
        return [Reply(data=b"+ Ready for literal data\r\n")]

    def _run_command(self) -> list[ClientOutput]:
        segments, literals = self._segments, self._literals
        self._segments, self._literals = [], []
        self._command_size = 0
        self._commands += 1
        if self._commands > self._limits.max_commands:
            return self._fatal(b"* BYE Too many commands before login", "command limit")
        try:
            tokens = tokenize(segments, literals)
        except ImapSyntaxError as error:
            return self._bad_command(segments[0], str(error).encode())
        return self._dispatch(segments[0], tokens)

    def _dispatch(self, first_line: bytes, tokens: list[Token]) -> list[ClientOutput]:
        if not tokens:
            return self._bad(b"*", b"Empty command line")
        tag_token = tokens[0]
        if not isinstance(tag_token, Atom) or not is_valid_tag(tag_token.value):
            return self._bad(b"*", b"Invalid tag")
        tag = tag_token.value
        if len(tokens) < 2 or not isinstance(tokens[1], Atom):
            return self._bad(tag, b"Missing command")
        name = tokens[1].value.upper()
        handler = self._handlers.get(name)
        if handler is not None:
            return handler(tag, tokens[2:])
        if name in _LATER_COMMANDS:
            return self._bad(tag, b"Log in first")
        return self._bad(tag, b"Unknown command")

    # Commands ------------------------------------------------------------

    def _capability(self, tag: bytes, arguments: list[Token]) -> list[ClientOutput]:
        if arguments:
            return self._bad(tag, b"CAPABILITY takes no arguments")
        line = b"* CAPABILITY " + b" ".join(self.capabilities()) + b"\r\n"
        return [Reply(data=line + tag + b" OK CAPABILITY completed\r\n")]

    def _noop(self, tag: bytes, arguments: list[Token]) -> list[ClientOutput]:
        if arguments:
            return self._bad(tag, b"NOOP takes no arguments")
        return [Reply(data=tag + b" OK NOOP completed\r\n")]

    def _logout(self, tag: bytes, arguments: list[Token]) -> list[ClientOutput]:
        if arguments:
            return self._bad(tag, b"LOGOUT takes no arguments")
        data = b"* BYE Logging out\r\n" + tag + b" OK LOGOUT completed\r\n"
        return [Reply(data=data), CloseRequested(reason="client logged out")]

    def _id(self, tag: bytes, arguments: list[Token]) -> list[ClientOutput]:
        # id = "ID" SP id-params-list; id-params-list = "(" *(string SP nstring)
        # ")" / nil (RFC 2971 section 4).
        if not _is_id_parameters(arguments):
            return self._bad(tag, b"Invalid ID parameters")
        data = b'* ID ("name" "mailproxy")\r\n' + tag + b" OK ID completed\r\n"
        return [Reply(data=data)]

    def _starttls(self, tag: bytes, arguments: list[Token]) -> list[ClientOutput]:
        if arguments:
            return self._bad(tag, b"STARTTLS takes no arguments")
        if self._tls_active:
            return self._bad(tag, b"TLS is already active")
        # Bytes pipelined after STARTTLS were sent in clear text; an attacker
        # could have injected them, so they are dropped (RFC 9051 6.2.1).
        self._buffer.clear()
        return [Reply(data=tag + b" OK Begin TLS negotiation now\r\n"), TlsRequested()]

    def _login(self, tag: bytes, arguments: list[Token]) -> list[ClientOutput]:
        if not self._tls_active:
            return [Reply(data=tag + b" NO [PRIVACYREQUIRED] Use STARTTLS first\r\n")]
        if len(arguments) != 2:
            return self._bad(tag, b"LOGIN takes a user name and a password")
        try:
            username = astring_text(arguments[0], "user name")
            password = astring_text(arguments[1], "password")
        except ImapSyntaxError as error:
            return self._bad(tag, str(error).encode())
        login = LoginRequested(
            username=username, password=Secret(password), mechanism="LOGIN"
        )
        return self._request_login(tag, login)

    def _authenticate(self, tag: bytes, arguments: list[Token]) -> list[ClientOutput]:
        if not self._tls_active:
            return [Reply(data=tag + b" NO [PRIVACYREQUIRED] Use STARTTLS first\r\n")]
        if not 1 <= len(arguments) <= 2 or not all(
            isinstance(a, Atom) for a in arguments
        ):
            return self._bad(
                tag, b"AUTHENTICATE takes a mechanism and an initial response"
            )
        mechanism = Mechanism.parse(arguments[0].value)  # type: ignore[union-attr]
        offered = self.capabilities()
        if mechanism is None or b"AUTH=" + mechanism.value.encode() not in offered:
            return [Reply(data=tag + b" NO Unsupported authentication mechanism\r\n")]
        initial = arguments[1].value if len(arguments) == 2 else None  # type: ignore[union-attr]
        self._tag = tag
        return self._start_sasl(mechanism, initial)

    def _sasl_reply(self, text: bytes) -> bytes:
        return self._tag + b" " + text + b"\r\n"

    # Helpers -----------------------------------------------------------------

    def _request_login(self, tag: bytes, login: LoginRequested) -> list[ClientOutput]:
        self._tag = tag
        self._holding = True
        return [login]

    def _bad(self, tag: bytes, text: bytes) -> list[ClientOutput]:
        reply = Reply(data=tag + b" BAD " + text + b"\r\n")
        return [reply, Violation(message=text.decode(errors="replace"), fatal=False)]

    def _bad_command(self, first_line: bytes, text: bytes) -> list[ClientOutput]:
        return self._bad(split_tag(first_line) or b"*", text)


def _is_authenticate(line: bytes) -> bool:
    words = line.split(b" ", 2)
    return len(words) > 1 and words[1].upper() == b"AUTHENTICATE"


def _is_id_parameters(arguments: list[Token]) -> bool:
    if len(arguments) == 1:
        only = arguments[0]
        return isinstance(only, Atom) and only.value.upper() == b"NIL"
    if (
        len(arguments) < 2
        or arguments[0] != Paren(True)
        or arguments[-1] != Paren(False)
    ):
        return False
    inner = arguments[1:-1]
    if len(inner) % 2:
        return False
    keys_are_strings = all(isinstance(t, String) for t in inner[0::2])
    values_ok = all(
        isinstance(t, String) or (isinstance(t, Atom) and t.value.upper() == b"NIL")
        for t in inner[1::2]
    )
    return keys_are_strings and values_ok

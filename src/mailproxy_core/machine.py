"""The interface between a session and its two protocol machines.

A session composes a client-facing machine and an upstream-facing machine
of one protocol, and neither depends on the other. The machines return the small
output values defined here, and the session turns them into
:mod:`~mailproxy_core.events` for the driver. Each protocol package
subclasses :class:`ClientMachine` and :class:`UpstreamMachine`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from .errors import SaslError
from .framing import LineBuffer, LineTooLongError
from .sasl import (
    Cancelled,
    Challenge,
    Mechanism,
    SaslServer,
    SaslStep,
    encode_base64,
    encode_oauthbearer,
    encode_plain,
    encode_xoauth2,
)
from .secrets import Secret
from .settings import AuthMethod, Limits, SessionSettings, UpstreamServer


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """Bytes that a machine sends to its own peer."""

    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginRequested:
    """The client finished a login command or SASL exchange.

    :param username: the authentication identity as decoded.
    :param password: the password or bearer token.
    :param mechanism: ``LOGIN``, ``USER`` or a SASL mechanism name.
    :param authzid: the SASL authorization identity, ``""`` when absent.
    :param is_token: whether ``password`` is an OAuth bearer token.
    """

    username: str
    password: Secret
    mechanism: str
    authzid: str = ""
    is_token: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsRequested:
    """The peer agreed to start TLS; bytes after the go-ahead are dropped."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseRequested:
    """The machine's peer ended the conversation (LOGOUT, QUIT) or must go.

    :param reason: why, for the log.
    """

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    """The peer broke the protocol; any error reply came as a :class:`Reply`.

    :param message: what was wrong, for the log.
    :param fatal: whether the connection must close.
    """

    message: str
    fatal: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamReply:
    """The upstream's final answer to the login, for the client machine.

    :param untagged: lines the upstream sent before its final reply, without
        CRLF, that the client should see too.
    :param text: the final reply without its tag or CRLF, such as
        ``OK [CAPABILITY IMAP4rev1] Logged in``.
    """

    untagged: tuple[bytes, ...] = ()
    text: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginSucceeded:
    """The upstream accepted the mail credentials (or needs none)."""

    reply: UpstreamReply


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginFailed:
    """The upstream rejected the login or cannot be used.

    :param reason: why, for the log.
    :param reply: the upstream's rejection to pass to the client, or
        ``None`` to send the proxy's own failure reply.
    :param unavailable: the upstream cannot serve logins at all (it sent
        a goodbye, or offers no usable mechanism), as opposed to rejecting
        these credentials.
    """

    reason: str
    reply: UpstreamReply | None = None
    unavailable: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ChallengeForClient:
    """The upstream sent a SASL challenge that only the client can answer.

    An OAuth server reports a rejected token this way (RFC 7628 section
    3.2.2): the client answers, and then the server sends its failure.

    :param data: the challenge as the upstream encoded it (base64 text).
    """

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ChallengeAnswered:
    """The client answered a relayed challenge.

    :param line: the client's response line without CRLF.
    """

    line: bytes = field(repr=False)


ClientOutput = (
    Reply
    | LoginRequested
    | TlsRequested
    | CloseRequested
    | Violation
    | ChallengeAnswered
)
UpstreamOutput = (
    Reply | TlsRequested | LoginSucceeded | LoginFailed | Violation | ChallengeForClient
)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamLogin:
    """The credentials that the upstream machine logs in with.

    :param username: the mail user name.
    :param secret: the mail password or bearer token.
    :param authzid: an authorization identity to pass on, or ``""``.
    :param mechanism: the mechanism the client used, so that a token goes
        upstream with the same SASL mechanism.
    :param is_token: whether ``secret`` is an OAuth bearer token.
    """

    username: str
    secret: Secret
    authzid: str = ""
    mechanism: str = "LOGIN"
    is_token: bool = False

    def sasl_mechanism(self) -> str:
        """Return the SASL mechanism to log in upstream with.

        A bearer token goes with the client's own mechanism; a password
        with PLAIN, which carries an authorization identity too.
        """
        return self.mechanism if self.is_token else "PLAIN"

    def sasl_message(self) -> bytes:
        """Return the raw SASL message for :meth:`sasl_mechanism`.

        It is rebuilt for the mail user name, which may differ from what the
        client typed (the server name is cut off); the token or password
        goes on unchanged.
        """
        mechanism = self.sasl_mechanism()
        if mechanism == "XOAUTH2":
            return encode_xoauth2(self.username, self.secret)
        if mechanism == "OAUTHBEARER":
            return encode_oauthbearer(self.username, self.secret)
        return encode_plain(self.authzid, self.username, self.secret)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientAddress:
    """The client's address, for an upstream that logs it in place of the proxy's.

    :param host: the IP address, without brackets.
    :param port: the TCP port, or ``None`` when the driver does not know it.
    """

    host: str
    port: int | None = None

    @property
    def is_ipv6(self) -> bool:
        """Whether :attr:`host` is an IPv6 address."""
        return ":" in self.host


class ClientMachine(abc.ABC):
    """The client-facing side of one protocol, before authentication.

    After a :class:`LoginRequested` output the machine holds every further
    byte until the session calls :meth:`login_failed` and :meth:`resume`
    (then it parses the held bytes) or :meth:`take_held` (then they go
    upstream unparsed).

    :param limits: the protocol's limits before authentication.
    :param max_line: the framing limit for one line.
    """

    #: What precedes a SASL challenge: ``"+ "`` in IMAP and POP3, ``"334 "``
    #: in SMTP.
    CHALLENGE_PREFIX = b"+ "
    #: The replies, without CRLF, that end a SASL exchange: an invalid
    #: initial response, an invalid response line, and a cancel (``*``).
    SASL_BAD_INITIAL = b""
    SASL_BAD_RESPONSE = b""
    SASL_CANCELLED = b""
    #: The reply, without CRLF, to a line over the framing limit.
    LINE_TOO_LONG = b""

    def __init__(
        self, settings: SessionSettings, limits: Limits, *, max_line: int
    ) -> None:
        self._settings = settings
        self._limits = limits
        self._buffer = LineBuffer(max_line=max_line)
        self._holding = False
        self._answering_challenge = False
        self._sasl: SaslServer | None = None

    def receive(self, data: bytes) -> list[ClientOutput]:
        """Consume client bytes; ``b""`` is never passed here."""
        self._buffer.feed(data)
        if len(self._buffer) > self._limits.max_buffered:
            return self._fatal(self._overflow_reply(), "buffer limit reached")
        if self._answering_challenge:
            return self._challenge_answer()
        if self._holding:
            return []
        return self._process()

    def sasl_mechanisms(self) -> list[bytes]:
        """Return the SASL mechanisms offered before login.

        Bearer tokens are offered only without ``aaa``: with it the password
        field must carry the VPN password too, which a token cannot.
        """
        names = [b"PLAIN", b"LOGIN"]
        if AuthMethod.AAA not in self._settings.methods:
            names += [b"XOAUTH2", b"OAUTHBEARER"]
        return names

    def _process(self) -> list[ClientOutput]:
        outputs: list[ClientOutput] = []
        while not self._holding:
            try:
                step = self._next_step()
            except LineTooLongError:
                return [*outputs, *self._fatal(self.LINE_TOO_LONG, "line too long")]
            if step is None:
                break
            outputs.extend(step)
            # Bytes after STARTTLS, a close or a fatal error are not parsed.
            if any(_ends_parsing(output) for output in step):
                break
        return outputs

    def _next_step(self) -> list[ClientOutput] | None:
        """Parse one buffered line, or return ``None`` when none is whole."""
        line = self._buffer.next_line()
        if line is None:
            return None
        if self._sasl is not None:
            return self._sasl_response(line)
        return self._command(line)

    def _command(self, line: bytes) -> list[ClientOutput]:
        """Run one command line; protocols that read lines override it."""
        raise NotImplementedError

    def resume(self) -> list[ClientOutput]:
        """Parse the bytes held while the failed login was under way."""
        self._holding = False
        self._answering_challenge = False
        return self._process()

    def take_held(self) -> bytes:
        """Return and forget the bytes held after the login command."""
        return self._buffer.take_all()

    def relay_challenge(self, data: bytes) -> list[ClientOutput]:
        """Pass an upstream challenge on and wait for the client's answer."""
        self._answering_challenge = True
        reply = Reply(data=self.CHALLENGE_PREFIX + data + b"\r\n")
        return [reply, *self._challenge_answer()]

    def _challenge_answer(self) -> list[ClientOutput]:
        try:
            line = self._buffer.next_line()
        except LineTooLongError:
            return self._fatal(self._overflow_reply(), "SASL response too long")
        if line is None:
            return []
        self._answering_challenge = False
        return [ChallengeAnswered(line=line)]

    # SASL exchanges, the same in every protocol but for the reply texts.

    def _start_sasl(
        self, mechanism: Mechanism, initial_response: bytes | None
    ) -> list[ClientOutput]:
        self._sasl = SaslServer(mechanism)
        try:
            step = self._sasl.start(initial_response)
        except SaslError:
            return self._end_sasl(self.SASL_BAD_INITIAL)
        return self._sasl_step(step)

    def _sasl_response(self, line: bytes) -> list[ClientOutput]:
        assert self._sasl is not None
        try:
            step = self._sasl.respond(line)
        except SaslError:
            return self._end_sasl(self.SASL_BAD_RESPONSE)
        return self._sasl_step(step)

    def _sasl_step(self, step: SaslStep) -> list[ClientOutput]:
        if isinstance(step, Challenge):
            data = self.CHALLENGE_PREFIX + encode_base64(step.data) + b"\r\n"
            return [Reply(data=data)]
        if isinstance(step, Cancelled):
            return self._end_sasl(self.SASL_CANCELLED)
        self._end_sasl(None)
        credentials = step.credentials
        self._holding = True
        login = LoginRequested(
            username=credentials.username,
            password=credentials.secret,
            mechanism=credentials.mechanism.value,
            authzid=credentials.authzid,
            is_token=credentials.is_token,
        )
        return [login]

    def _end_sasl(self, reply: bytes | None) -> list[ClientOutput]:
        self._sasl = None
        if reply is None:
            return []
        return [Reply(data=self._sasl_reply(reply))]

    def _sasl_reply(self, text: bytes) -> bytes:
        """Frame the reply that ends a SASL exchange; IMAP adds the tag."""
        return text + b"\r\n"

    def _fatal(self, reply: bytes, message: str) -> list[ClientOutput]:
        # Nothing more is parsed: the session closes the connection.
        self._holding = True
        self._buffer.clear()
        return [Reply(data=reply + b"\r\n"), Violation(message=message, fatal=True)]

    @abc.abstractmethod
    def _overflow_reply(self) -> bytes:
        """Return the reply, without CRLF, for too many buffered bytes."""

    @abc.abstractmethod
    def greeting(self) -> bytes:
        """Return the greeting sent when the session starts."""

    @abc.abstractmethod
    def tls_established(self) -> list[ClientOutput]:
        """Note that the client connection is now protected by TLS."""

    @abc.abstractmethod
    def login_succeeded(self, reply: UpstreamReply) -> bytes:
        """Return the success reply for the pending login."""

    @abc.abstractmethod
    def login_failed(
        self, reply: UpstreamReply | None, *, unavailable: bool = False
    ) -> bytes:
        """Return the failure reply for the pending login.

        :param reply: the upstream's rejection, or ``None`` for the proxy's
            own reply.
        :param unavailable: the upstream could not be reached, so the reply
            says the service is unavailable instead of a bad login.
        """

    @abc.abstractmethod
    def goodbye(self, text: str) -> bytes:
        """Return the protocol's goodbye (``* BYE``, ``-ERR``, ``421``)."""


def _ends_parsing(output: ClientOutput) -> bool:
    if isinstance(output, (CloseRequested, TlsRequested)):
        return True
    return isinstance(output, Violation) and output.fatal


class UpstreamMachine(abc.ABC):
    """The upstream-facing side of one protocol, up to the login result.

    :param server: the upstream being logged in to.
    :param login: the mail credentials, or ``None`` for no upstream login.
    :param client_address: the client's address to tell the upstream before
        the login, or ``None`` to tell it nothing.
    """

    def __init__(
        self,
        server: UpstreamServer,
        login: UpstreamLogin | None,
        *,
        client_address: ClientAddress | None = None,
    ) -> None:
        self.server = server
        self.login = login
        self.client_address = client_address

    @abc.abstractmethod
    def receive(self, data: bytes) -> list[UpstreamOutput]:
        """Consume upstream bytes; ``b""`` is never passed here."""

    @abc.abstractmethod
    def tls_established(self) -> list[UpstreamOutput]:
        """Continue after the STARTTLS handshake with the upstream."""

    @abc.abstractmethod
    def take_remaining(self) -> bytes:
        """Return bytes the upstream sent after its final login reply."""

    def _refuse_early_bytes(
        self, outputs: list[UpstreamOutput]
    ) -> list[UpstreamOutput]:
        """Replace the TLS request with a fatal violation.

        For bytes that arrived after the upstream's STARTTLS go-ahead: they
        would be read as if TLS protected them, and an attacker on the path
        could have injected them (RFC 3207 section 4.2).
        """
        kept = [o for o in outputs if not isinstance(o, TlsRequested)]
        message = "upstream sent data after its STARTTLS go-ahead"
        return [*kept, Violation(message=message, fatal=True)]

    def challenge_answered(self, line: bytes) -> list[UpstreamOutput]:
        """Send the client's answer to a relayed challenge upstream."""
        return [Reply(data=line + b"\r\n")]

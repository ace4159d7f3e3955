"""The interface between a session and its two protocol machines.

A session composes a client-facing machine and an upstream-facing machine
of one protocol; neither knows the other. The machines return the small
output values defined here, and the session turns them into
:mod:`~mailproxy_core.events` for the driver. Each protocol package
subclasses :class:`ClientMachine` and :class:`UpstreamMachine`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from .secrets import Secret
from .settings import UpstreamServer


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
    :param unavailable: the upstream cannot serve logins at all (it said
        goodbye, or offers no usable mechanism), as opposed to rejecting
        these credentials.
    """

    reason: str
    reply: UpstreamReply | None = None
    unavailable: bool = False


ClientOutput = Reply | LoginRequested | TlsRequested | CloseRequested | Violation
UpstreamOutput = Reply | TlsRequested | LoginSucceeded | LoginFailed | Violation


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


class ClientMachine(abc.ABC):
    """The client-facing side of one protocol, before authentication.

    After a :class:`LoginRequested` output the machine holds every further
    byte until the session calls :meth:`login_failed` (then it parses the
    held bytes) or :meth:`take_held` (then they go upstream unparsed).
    """

    @abc.abstractmethod
    def greeting(self) -> bytes:
        """Return the greeting sent when the session starts."""

    @abc.abstractmethod
    def receive(self, data: bytes) -> list[ClientOutput]:
        """Consume client bytes; ``b""`` is never passed here."""

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
    def resume(self) -> list[ClientOutput]:
        """Parse the bytes held while the failed login was under way."""

    @abc.abstractmethod
    def take_held(self) -> bytes:
        """Return and forget the bytes held after the login command."""

    @abc.abstractmethod
    def goodbye(self, text: str) -> bytes:
        """Return the protocol's goodbye (``* BYE``, ``-ERR``, ``421``)."""


class UpstreamMachine(abc.ABC):
    """The upstream-facing side of one protocol, up to the login result."""

    def __init__(self, server: UpstreamServer, login: UpstreamLogin | None) -> None:
        self.server = server
        self.login = login

    @abc.abstractmethod
    def receive(self, data: bytes) -> list[UpstreamOutput]:
        """Consume upstream bytes; ``b""`` is never passed here."""

    @abc.abstractmethod
    def tls_established(self) -> list[UpstreamOutput]:
        """Continue after the STARTTLS handshake with the upstream."""

    @abc.abstractmethod
    def take_remaining(self) -> bytes:
        """Return bytes the upstream sent after its final login reply."""

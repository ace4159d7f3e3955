"""The table of proxied protocols that drives configuration and listeners.

Each row names the configuration section (``imap4s``), the session class
that speaks the protocol, the listener keys only it has, and the
protocol's own defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol

from ..authflow import Subject
from ..events import Event, Side
from ..imap import ImapSession
from ..pop3 import PopSession
from ..session import Session
from ..settings import AuthMethod, Limits, SessionSettings
from ..smtp import SmtpSession
from ..states import ConnectionState


class ProxySession(Protocol):
    """The calls that the proxy makes into a core session."""

    @property
    def state(self) -> ConnectionState:
        """Current connection state."""

    @property
    def closed(self) -> bool:
        """Whether the session has ended."""

    @property
    def identity(self) -> str | None:
        """The VPN identity of the user, once the login selected an upstream."""

    def start(
        self,
        *,
        client_address: str | None = None,
        client_port: int | None = None,
        certificate_subject: Subject | None = None,
    ) -> list[Event]:
        """Return the greeting events."""

    def receive_client(self, data: bytes) -> list[Event]:
        """Feed bytes from the client; ``b""`` means end of stream."""

    def receive_upstream(self, data: bytes) -> list[Event]:
        """Feed bytes from the upstream; ``b""`` means end of stream."""

    def authentication_result(
        self,
        method: AuthMethod,
        *,
        success: bool,
        reason: str = "",
        group: str | None = None,
    ) -> list[Event]:
        """Report the result of the check that ``AuthenticationRequired`` requested."""

    def reject_login(self, reason: str) -> list[Event]:
        """Fail the login that waits for its upstream connection."""

    def upstream_connected(self) -> list[Event]:
        """Report that the selected upstream is connected."""

    def upstream_failed(self, reason: str) -> list[Event]:
        """Report that the selected upstream could not be reached."""

    def tls_established(
        self, side: Side, *, certificate_subject: Subject | None = None
    ) -> list[Event]:
        """Report that a requested TLS handshake finished."""

    def shutdown(self, text: str = ...) -> list[Event]:
        """Return the goodbye with ``text`` and a close, unless authenticated."""


#: Builds the session of one connection from the listener's settings.
SessionFactory = Callable[[SessionSettings], ProxySession]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolSpec:
    """One proxied protocol and its defaults.

    :param name: configuration section and log prefix, such as ``imap4s``.
    :param label: name for people, such as ``IMAP4S``.
    :param default_port: port used when a ``listen`` entry names none.
    :param session_class: the core session class of the protocol.
    :param session_keys: listener keys that only this protocol has; they
        shape its sessions (see :mod:`~mailproxy_core.proxy.sessionoptions`).
    :param idle_authenticated: default seconds a relayed client may stay
        silent, the protocol's own minimum autologout time.
    :param requires_mailhost: whether ``authentication`` must contain
        ``mailhost``, because the upstream login is the only way in.
    :param upstream_port: default upstream port without implicit TLS.
    :param upstream_tls_port: default upstream port with implicit TLS.
    """

    name: str
    label: str
    default_port: int
    session_class: type[Session]
    session_keys: frozenset[str]
    idle_authenticated: float
    requires_mailhost: bool
    upstream_port: int
    upstream_tls_port: int


_IMAP4S = ProtocolSpec(
    name="imap4s",
    label="IMAP4S",
    default_port=993,
    session_class=ImapSession,
    session_keys=frozenset({"imap4rev2"}),
    # RFC 9051 section 5.4: an autologout timer lasts at least 30 minutes.
    idle_authenticated=30 * 60.0,
    requires_mailhost=True,
    upstream_port=143,
    upstream_tls_port=993,
)

_POP3S = ProtocolSpec(
    name="pop3s",
    label="POP3S",
    default_port=995,
    session_class=PopSession,
    session_keys=frozenset(),
    # RFC 1939 section 3: an inactivity autologout timer lasts at least 10 minutes.
    idle_authenticated=10 * 60.0,
    requires_mailhost=True,
    upstream_port=110,
    upstream_tls_port=995,
)

_SMTPS = ProtocolSpec(
    name="smtps",
    label="SMTPS",
    default_port=988,
    session_class=SmtpSession,
    session_keys=frozenset({"hostname", "size", "eightbitmime", "smtputf8"}),
    # RFC 5321 section 4.5.3.2.7: a server waits at least 5 minutes for a command.
    idle_authenticated=5 * 60.0,
    requires_mailhost=False,
    # RFC 8314 section 3.3: submission over implicit TLS uses port 465.
    upstream_port=587,
    upstream_tls_port=465,
)

#: Every protocol the configuration accepts, by section name.
PROTOCOLS: Final[Mapping[str, ProtocolSpec]] = MappingProxyType(
    {spec.name: spec for spec in (_IMAP4S, _POP3S, _SMTPS)}
)


def default_limits(spec: ProtocolSpec) -> Limits:
    """Return the limits that the protocol's session class uses by default."""
    return spec.session_class.DEFAULT_LIMITS

"""Events that a session returns to its driver.

Each call into a :class:`~mailproxy_core.session.Session` returns a list of
these, in the order the driver must act on them. Three families:

* observations, named in the past tense (:class:`CredentialsObserved`,
  :class:`StateChanged`, :class:`ProtocolErrorObserved`);
* requests that the driver answers with a call back into the session
  (:class:`AuthenticationRequired`, :class:`UpstreamSelected`);
* actions (:class:`SendToClient`, :class:`SendToUpstream`,
  :class:`ForwardData`, :class:`StartTLS`, :class:`CloseUpstream`,
  :class:`CloseConnection`).

No event shows a secret in its ``repr`` or ``str``: passwords and tokens
are :class:`~mailproxy_core.secrets.Secret` values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .delimiters import SplitCredentials
from .settings import AuthMethod, GroupPolicy, UpstreamServer
from .states import ConnectionState


class Side(enum.Enum):
    """One of the two peers of a proxied connection."""

    CLIENT = "client"
    UPSTREAM = "upstream"


class Direction(enum.Enum):
    """The direction of relayed bytes."""

    TO_UPSTREAM = "to_upstream"
    TO_CLIENT = "to_client"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base class of all session events."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SendToClient(Event):
    """Bytes that the proxy itself sends to the client.

    :param data: the bytes, already framed with CRLF.
    """

    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SendToUpstream(Event):
    """Bytes that the proxy itself sends to the upstream server.

    :param data: the bytes; during the upstream login they may carry the
        mail password, so ``repr`` hides them.
    """

    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardData(Event):
    """Bytes to relay unchanged once the session is authenticated.

    :param direction: where the bytes go.
    :param data: the very bytes object that the driver passed in; after
        authentication the session never copies relayed data.
    """

    direction: Direction
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTLS(Event):
    """Start a TLS handshake on one side, then call ``tls_established``.

    :param side: the connection to upgrade.
    """

    side: Side


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseConnection(Event):
    """Close both connections after sending what came before this event.

    :param reason: why, for the log.
    """

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseUpstream(Event):
    """Close only the upstream connection; the client stays connected.

    Sent after a failed upstream login, so the client may try again.

    :param reason: why, for the log.
    """

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StateChanged(Event):
    """The connection moved from one state to another.

    :param old: the state before.
    :param new: the state now.
    """

    old: ConnectionState
    new: ConnectionState


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialsObserved(Event):
    """The client presented a complete login, decoded and split.

    :param username: the user name as typed, after protocol decoding.
    :param credentials: its parts; the passwords are redacted in ``repr``.
    :param mechanism: ``"LOGIN"`` or ``"USER"`` for a plain command, else
        the SASL mechanism name.
    """

    username: str
    credentials: SplitCredentials
    mechanism: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthenticationRequired(Event):
    """The driver must check one method and call ``authentication_result``.

    :param method: the method to check: ``piggyback`` or ``aaa``. The
        session checks ``certificate`` itself, and ``mailhost`` through the
        upstream login.
    :param credentials: the split credentials of the login.
    :param identity: the VPN user name known so far (from the client
        certificate or the typed VPN part), or ``None``; ``piggyback``
        matches it against the web session's user when it is set.
    :param client_address: the client's address as given to ``start``.
    """

    method: AuthMethod
    credentials: SplitCredentials
    identity: str | None = None
    client_address: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthenticationSucceeded(Event):
    """One method accepted the login.

    :param method: the method that passed.
    """

    method: AuthMethod


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthenticationFailed(Event):
    """The login failed; the client has received the protocol's failure reply.

    :param method: the method that failed, or ``None`` when the credentials
        could not even be split or no upstream could be chosen.
    :param reason: why, for the log; never a secret.
    :param attempts_left: failed logins the client may still make.
    """

    method: AuthMethod | None
    reason: str
    attempts_left: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamSelected(Event):
    """Connect to this upstream, then call ``upstream_connected`` or
    ``upstream_failed``.

    :param server: the configured server to connect to.
    :param user: the user the session counts against, for the group
        policy's ``max_sessions_per_user``: the VPN identity when known,
        else the mail user name.
    :param policy: the user's group policy; the driver enforces its
        session count and answers with ``reject_login`` when it is reached.
    """

    server: UpstreamServer
    user: str = ""
    policy: GroupPolicy | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolErrorObserved(Event):
    """A peer sent bytes the protocol forbids; an error reply went back.

    :param side: which peer.
    :param message: what was wrong; never a secret.
    :param fatal: whether the connection closes because of it.
    """

    side: Side
    message: str
    fatal: bool

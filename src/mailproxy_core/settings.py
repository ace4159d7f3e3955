"""Settings that a driver builds and passes to a session.

The core reads no file: the reference proxy turns its TOML configuration
into these objects, and any other driver may build them directly.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from .delimiters import Delimiters
from .errors import ConfigurationError


class AuthMethod(enum.Enum):
    """An authentication method; a login must pass every configured one."""

    # Identity hashing, as for ConnectionState: members are singletons.
    __hash__ = object.__hash__

    CERTIFICATE = "certificate"
    PIGGYBACK = "piggyback"
    AAA = "aaa"
    MAILHOST = "mailhost"


#: The order in which configured methods are checked.
METHOD_ORDER: Final = (
    AuthMethod.CERTIFICATE,
    AuthMethod.PIGGYBACK,
    AuthMethod.AAA,
    AuthMethod.MAILHOST,
)


class UpstreamTLS(enum.Enum):
    """The protection of the proxy's connection to an upstream server."""

    IMPLICIT = "implicit"
    STARTTLS = "starttls"
    NONE = "none"


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamServer:
    """An upstream mail server that users may select by name.

    :param name: the name users type after the server separator.
    :param host: host name or address to connect to.
    :param port: TCP port.
    :param tls: how to protect the connection.
    :param verify: whether the driver verifies the server's certificate.
    :param forward_client_address: whether the upstream machine sends the
        server the client's address before the login: IMAP ``ID`` with
        ``x-originating-ip`` and ``x-originating-port``, SMTP and POP3
        ``XCLIENT ADDR= PORT=``. It is sent only when the server offers
        the command, and the server must trust the proxy to honour it.
    """

    name: str
    host: str
    port: int
    tls: UpstreamTLS = UpstreamTLS.NONE
    verify: bool = True
    forward_client_address: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigurationError(
                f"port = {self.port} of server {self.name!r} is invalid; use 1 to 65535"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Size and count limits before authentication, in octets and commands.

    The defaults are IMAP's; each session class has its protocol's as
    ``DEFAULT_LIMITS``, and the documentation gives their sources.

    :param max_line: longest command line, terminator included, literals
        excluded.
    :param max_sasl_line: longest SASL response line.
    :param max_literal: largest literal accepted before authentication.
    :param max_buffered: bytes held for one connection before
        authentication, pipelined commands included.
    :param max_commands: commands accepted before authentication.
    """

    max_line: int = 8192
    max_sasl_line: int = 12288
    max_literal: int = 8192
    max_buffered: int = 65536
    max_commands: int = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupPolicy:
    """What the users of one group may do.

    :param name: the policy's name, which AAA servers return as the group.
    :param protocols: the listeners (``imap4s``, ``pop3s``, ``smtps``) its
        users may use, or ``None`` for all.
    :param servers: the upstream server names its users may select, or
        ``None`` for all configured ones.
    :param max_sessions_per_user: sessions one user may hold at once, or
        ``None`` for no limit. The driver counts them, because the core
        sees one connection at a time.
    """

    name: str
    protocols: frozenset[str] | None = None
    servers: frozenset[str] | None = None
    max_sessions_per_user: int | None = None

    def allows_protocol(self, protocol: str) -> bool:
        """Whether users of this policy may use the listener ``protocol``."""
        return self.protocols is None or protocol in self.protocols

    def allows_server(self, name: str) -> bool:
        """Whether users of this policy may select the server ``name``."""
        return self.servers is None or name in self.servers


#: The policy used when AAA returns no group and no other default is set:
#: it allows every listener and server.
OPEN_POLICY: Final = GroupPolicy(name="default")


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionSettings:
    """Everything a session of one listener needs to know.

    :param methods: the configured authentication methods, in any order;
        the session checks them in :data:`METHOD_ORDER`.
    :param servers: the upstream servers users may select, by name.
    :param default_server: the server used when the user names none, or
        ``None`` so that such a login fails.
    :param delimiters: the credential separators.
    :param max_auth_attempts: failed logins allowed per connection before
        the connection is closed.
    :param starttls_required: the listener speaks plain text first and
        accepts no credentials before the client's STARTTLS.
    :param limits: size and count limits before authentication, or
        ``None`` for the protocol's defaults (each session class has them
        as ``DEFAULT_LIMITS``).
    :param greeting: text of the proxy's greeting line.
    :param certificate_username: the subject attributes that give the
        user name of a client certificate, first present one wins; ``None``
        for the entire DN.
    :param group_policies: the group policies by name; an AAA group names
        one of them.
    :param default_group_policy: the policy when AAA returns no group, or
        ``None`` to refuse such logins.
    :param any_server: when set, users may name any host after the server
        separator, and the proxy connects to it with this entry's port, TLS
        mode and verification (its ``name`` and ``host`` are ignored). Off
        by default: it turns the proxy into an open relay and a way to
        reach internal hosts for everyone who passes the other checks.
        A group policy's ``servers`` still restricts the names.
    """

    methods: frozenset[AuthMethod] = frozenset({AuthMethod.AAA, AuthMethod.MAILHOST})
    servers: Mapping[str, UpstreamServer] = field(
        default_factory=lambda: MappingProxyType({})
    )
    default_server: str | None = None
    delimiters: Delimiters = field(default_factory=Delimiters)
    max_auth_attempts: int = 3
    starttls_required: bool = False
    limits: Limits | None = None
    greeting: str = "mailproxy ready"
    certificate_username: tuple[str, ...] | None = ("CN", "OU")
    group_policies: Mapping[str, GroupPolicy] = field(
        default_factory=lambda: MappingProxyType({})
    )
    default_group_policy: GroupPolicy | None = OPEN_POLICY
    any_server: UpstreamServer | None = None

    def __post_init__(self) -> None:
        if not self.methods:
            raise ConfigurationError("authentication must name at least one method")
        if self.default_server is not None and self.default_server not in self.servers:
            raise ConfigurationError(
                f"default_server = {self.default_server!r} is not a configured server"
            )
        if self.max_auth_attempts < 1:
            raise ConfigurationError("max_auth_attempts must be at least 1")
        self._check_server_names()

    def _check_server_names(self) -> None:
        # Users select a server by the text after the last server separator,
        # compared without case, so names must be non-empty, free of both
        # separators and distinct when folded.
        separators = (self.delimiters.name_separator, self.delimiters.server_separator)
        folded: dict[str, str] = {}
        for name in self.servers:
            if not name or any(s in name for s in separators):
                raise ConfigurationError(
                    f"server name {name!r} is invalid; it must be non-empty and "
                    f"contain neither {separators[0]!r} nor {separators[1]!r}"
                )
            other = folded.setdefault(name.casefold(), name)
            if other != name:
                raise ConfigurationError(
                    f"server names {other!r} and {name!r} differ only in case"
                )

    def ordered_methods(self) -> tuple[AuthMethod, ...]:
        """Return the configured methods in the order they are checked."""
        return tuple(m for m in METHOD_ORDER if m in self.methods)

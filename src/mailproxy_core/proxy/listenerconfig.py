"""The configuration of one protocol listener, such as ``[imap4s]``.

Keys of a listener table (all optional unless marked):

``listen``
    ``"host:port"``, ``"[v6-address]:port"`` or a host alone (the
    protocol's default port), or a list of them. Port 0 binds any free
    port, which tests use. Without ``listen`` the section is validated but
    nothing listens.
``certificate``, ``private_key``
    PEM files of the TLS certificate chain and its key. ``private_key`` may
    be left out when the certificate file contains the key. Without
    ``certificate`` the proxy makes a throwaway self-signed certificate.
``client_ca``
    a PEM bundle of the CAs that sign client certificates. With it the
    listener requests a client certificate in every TLS handshake and
    verifies it against this bundle. A certificate that does not verify
    fails the handshake. Method ``certificate`` requires this key.
``client_certificate``
    ``"optional"`` (the default when ``client_ca`` is set): a client may
    connect without a certificate, and method ``certificate`` then fails
    its logins. ``"required"``: the TLS handshake fails without a valid
    client certificate.
``certificate_username``
    how method ``certificate`` derives the user name from the subject: a
    list of attribute names, the first one present wins, default
    ``["CN", "OU"]``; or ``"entire-dn"`` for the whole subject, most
    specific attribute first as in RFC 4514 (``CN=alice,OU=staff,O=Example``).
    The names are ``C``, ``CN``, ``DC``, ``EMAILADDRESS``, ``GIVENNAME``,
    ``L``, ``O``, ``OU``, ``SERIALNUMBER``, ``ST``, ``SURNAME``, ``TITLE``
    and ``UID``, in any case.
``authentication``
    the methods every login must pass, default ``["aaa", "mailhost"]``.
    ``certificate`` needs ``client_ca``, and ``piggyback`` needs the
    top-level ``[piggyback]`` table.
``authentication_server_group``
    the ``[aaa.NAME]`` group that checks method ``aaa``. Without it every
    login of a listener with method ``aaa`` fails.
``default_server``
    the ``servers`` entry used when the user names none.
``outstanding``
    maximum of connections not yet authenticated, default 20; 0 disables
    the limit.
``max_auth_attempts``
    failed logins per connection before it is closed, default 3.
``starttls``
    ``"required"``: the listener speaks plain text until the client's
    STARTTLS. Without it TLS starts with the first byte.
``greeting``
    text of the proxy's greeting line.
``default_group_policy``
    the ``[group_policy.NAME]`` for users whose AAA group returns none;
    without it such users get a policy that allows everything.
``proxy_protocol``
    the addresses or networks of TCP load balancers that send the PROXY
    protocol header (version 1 or 2) before the TLS handshake, such as
    ``["127.0.0.1", "10.0.0.0/8"]``. A connection from one of them must
    start with a valid header within the ``handshake`` timeout, or it is
    closed. The header's source address is then the client address in
    logs, accounting and the piggyback check. Connections from other
    addresses are served without a header. Without the key no header is
    read.
``[NAME.timeouts]``
    seconds: ``handshake`` (10), ``idle_unauthenticated`` (60), ``aaa``
    (5), ``upstream`` (10, connect and login), ``idle_authenticated`` (the
    protocol's autologout minimum).
``[NAME.limits]``
    ``max_line``, ``max_sasl_line``, ``max_literal``, ``max_buffered``
    (octets) and ``max_commands`` before authentication.
``[NAME.delimiters]``
    separators for this listener; the top-level ``[delimiters]`` otherwise.
``allow_any_server``, ``[NAME.any_server]``
    ``allow_any_server = true`` lets users name any host after the server
    separator; the proxy then connects with the ``port``, ``tls`` and
    ``verify`` of the optional ``any_server`` table (defaults as for a
    server; verification uses the system's CA store). Off by default,
    because it makes the proxy an open relay and a way into internal hosts.
``[NAME.servers.SERVER]``
    an upstream: ``host`` (required), ``port`` (the protocol's default for
    the TLS mode), ``tls`` (``implicit``, ``starttls`` or ``none``, default
    ``none``), ``verify`` (default true), ``ca_file`` (a PEM bundle to
    verify against instead of the system store) and
    ``forward_client_address`` (default false): when true, the proxy tells
    the server the client's address and port before the login, with IMAP
    ``ID`` or SMTP and POP3 ``XCLIENT``, if the server offers the command.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from ..delimiters import Delimiters
from ..errors import ConfigurationError
from ..settings import (
    OPEN_POLICY,
    AuthMethod,
    GroupPolicy,
    Limits,
    SessionSettings,
    UpstreamServer,
    UpstreamTLS,
)
from .certificateconfig import (
    ClientCertificates,
    read_certificate_username,
    read_client_certificates,
)
from .configtable import ConfigTable, describe_choices
from .loadbalancer import Network, parse_network
from .protocols import ProtocolSpec, ProxySession, SessionFactory, default_limits
from .sessionoptions import read_session_factory

if TYPE_CHECKING:
    from .config import AaaGroupConfig

_LISTENER_KEYS: Final = frozenset(
    {
        "listen",
        "certificate",
        "private_key",
        "client_ca",
        "client_certificate",
        "certificate_username",
        "authentication",
        "authentication_server_group",
        "default_server",
        "outstanding",
        "max_auth_attempts",
        "starttls",
        "greeting",
        "default_group_policy",
        "allow_any_server",
        "any_server",
        "proxy_protocol",
        "timeouts",
        "limits",
        "delimiters",
        "servers",
    }
)

_SERVER_KEYS: Final = frozenset(
    {"host", "port", "tls", "verify", "ca_file", "forward_client_address"}
)

_LIMIT_KEYS: Final = tuple(field.name for field in dataclasses.fields(Limits))


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class ListenAddress:
    """One address a listener binds to.

    :param host: an IP address or host name, without brackets.
    :param port: the TCP port.
    """

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """The driver's timeouts of one listener, in seconds.

    :param handshake: for the client's TLS handshake.
    :param idle_unauthenticated: client silence allowed before login.
    :param aaa: for one reply of the AAA server group.
    :param upstream: for the upstream connect and login together.
    :param idle_authenticated: client silence allowed while relaying.
    """

    handshake: float = 10.0
    idle_unauthenticated: float = 60.0
    aaa: float = 5.0
    upstream: float = 10.0
    idle_authenticated: float = 1800.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerConfig:
    """One configured protocol listener.

    :param protocol: the section name, such as ``imap4s``.
    :param spec: the protocol's table row.
    :param listen: addresses to bind; empty for no listener.
    :param certificate: PEM certificate chain, or ``None`` for a
        throwaway self-signed certificate.
    :param private_key: PEM key, or ``None`` when ``certificate`` has it.
    :param aaa_group: the AAA server group for method ``aaa``.
    :param outstanding: maximum of connections not yet authenticated; 0
        disables the limit.
    :param timeouts: the driver's timeouts.
    :param session: the settings passed to each session.
    :param upstream_ca_files: CA bundles by upstream server name.
    :param client_certificates: how client certificates are requested and
        verified, or ``None`` when the listener requests none.
    :param session_factory: builds each session with the protocol-specific
        keys applied, or ``None`` for the protocol's session class as it is.
    :param proxy_protocol: the load balancers whose connections start with
        a PROXY protocol header; empty when no header is read.
    """

    protocol: str
    spec: ProtocolSpec
    listen: tuple[ListenAddress, ...]
    certificate: Path | None
    private_key: Path | None
    aaa_group: str | None
    outstanding: int
    timeouts: Timeouts
    session: SessionSettings
    upstream_ca_files: Mapping[str, Path] = field(
        default_factory=lambda: MappingProxyType({})
    )
    client_certificates: ClientCertificates | None = None
    session_factory: SessionFactory | None = None
    proxy_protocol: tuple[Network, ...] = ()

    def warnings(self) -> list[str]:
        """Return problems that let the listener start but fail logins."""
        if AuthMethod.AAA in self.session.methods and self.aaa_group is None:
            return [
                f"{self.protocol}: authentication includes aaa but no "
                "authentication_server_group is set, so every login fails"
            ]
        return []

    def make_session(self) -> ProxySession:
        """Create the session of one new connection."""
        factory = self.session_factory or self.spec.session_class
        return factory(self.session)


def parse_listen_address(text: str, default_port: int) -> ListenAddress:
    """Parse ``host:port``, ``[v6]:port``, ``host`` or a bare IPv6 address.

    :raises ValueError: with a message that names what is wrong.
    """
    host, port = _split_host_port(text.strip())
    if not host:
        raise ValueError(f"{text!r} has no host; write for example 127.0.0.1:993")
    if port is None:
        return ListenAddress(host=host, port=default_port)
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(
            f"{text!r} has an invalid port; use 1 to 65535, or 0 for any free port"
        )
    return ListenAddress(host=host, port=int(port))


def _split_host_port(text: str) -> tuple[str, str | None]:
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is invalid; write for example [::1]:993")
        _check_ipv6(host, text)
        return host, rest[1:] if rest else None
    if text.count(":") > 1:
        _check_ipv6(text, text)
        return text, None
    host, colon, port = text.partition(":")
    return host, port if colon else None


def _check_ipv6(host: str, text: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise ValueError(f"{text!r} contains no valid IPv6 address") from None


def read_delimiters(table: ConfigTable | None, default: Delimiters) -> Delimiters:
    """Return the delimiters of ``table``, each key defaulting to ``default``.

    :raises ConfigurationError: naming the table and the allowed values.
    """
    if table is None:
        return default
    table.reject_unknown({"name_separator", "server_separator"})
    name = table.string("name_separator", default.name_separator)
    server = table.string("server_separator", default.server_separator)
    assert name is not None and server is not None
    try:
        return Delimiters(name_separator=name, server_separator=server)
    except ConfigurationError as error:
        raise ConfigurationError(f"{table.path}: {error}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class SharedSettings:
    """Top-level settings that every listener uses.

    :param base: the folder that relative file names start from.
    :param delimiters: the top-level delimiters.
    :param groups: the configured AAA server groups.
    :param policies: the configured group policies.
    :param piggyback_database: the web sessions file of method
        ``piggyback``, or ``None`` without a ``[piggyback]`` table.
    """

    base: Path
    delimiters: Delimiters
    groups: Mapping[str, AaaGroupConfig]
    policies: Mapping[str, GroupPolicy]
    piggyback_database: Path | None = None


def read_listener(
    table: ConfigTable, spec: ProtocolSpec, shared: SharedSettings
) -> ListenerConfig:
    """Validate the listener table of protocol ``spec``.

    :raises ConfigurationError: naming the first invalid key.
    """
    table.reject_unknown(_LISTENER_KEYS | spec.session_keys)
    base = shared.base
    methods = _read_methods(table, spec)
    _check_piggyback(table, methods, shared)
    aaa_group = _read_aaa_group_name(table, methods, shared.groups)
    servers, ca_files = _read_servers(table, spec, base, methods)
    certificate, private_key = _read_certificate(table, base)
    client_ca = _read_existing_file(table, "client_ca", base)
    return ListenerConfig(
        protocol=spec.name,
        spec=spec,
        listen=_read_listen(table, spec),
        certificate=certificate,
        private_key=private_key,
        aaa_group=aaa_group,
        outstanding=table.integer("outstanding", 20),
        timeouts=_read_timeouts(table.table("timeouts"), spec),
        session=_read_session(table, spec, methods, servers, shared),
        upstream_ca_files=MappingProxyType(ca_files),
        client_certificates=read_client_certificates(table, client_ca, methods),
        session_factory=read_session_factory(table, spec),
        proxy_protocol=_read_proxy_protocol(table),
    )


def _read_listen(table: ConfigTable, spec: ProtocolSpec) -> tuple[ListenAddress, ...]:
    entries = table.string_list("listen") or []
    addresses = []
    for index, entry in enumerate(entries):
        try:
            addresses.append(parse_listen_address(entry, spec.default_port))
        except ValueError as error:
            raise table.error(f"listen[{index}]", str(error)) from None
    return tuple(addresses)


def _read_proxy_protocol(table: ConfigTable) -> tuple[Network, ...]:
    entries = table.string_list("proxy_protocol") or []
    networks = []
    for index, entry in enumerate(entries):
        try:
            networks.append(parse_network(entry))
        except ValueError as error:
            raise table.error(
                f"proxy_protocol[{index}]",
                f"{entry!r} is invalid ({error}); write an address such as "
                '"10.0.0.5" or a network such as "10.0.0.0/8"',
            ) from None
    return tuple(networks)


def _read_certificate(
    table: ConfigTable, base: Path
) -> tuple[Path | None, Path | None]:
    certificate = _read_existing_file(table, "certificate", base)
    private_key = _read_existing_file(table, "private_key", base)
    if private_key is not None and certificate is None:
        raise table.error("private_key", "set certificate too, or remove this key")
    return certificate, private_key


def _read_existing_file(table: ConfigTable, name: str, base: Path) -> Path | None:
    value = table.string(name)
    if value is None:
        return None
    path = base / value
    if not path.is_file():
        raise table.error(name, f"file {str(path)!r} not found")
    return path


def _read_methods(table: ConfigTable, spec: ProtocolSpec) -> frozenset[AuthMethod]:
    names = table.string_list("authentication")
    if names is None:
        names = ["aaa", "mailhost"]
    methods = {_read_method(table, index, name) for index, name in enumerate(names)}
    if len(methods) < len(names):
        raise table.error("authentication", "names a method more than once")
    if not methods:
        raise table.error("authentication", "must name at least one method")
    if spec.requires_mailhost and AuthMethod.MAILHOST not in methods:
        raise table.error(
            "authentication", f"{spec.label} requires mailhost; add 'mailhost'"
        )
    return frozenset(methods)


def _read_method(table: ConfigTable, index: int, name: str) -> AuthMethod:
    key = f"authentication[{index}]"
    known = {method.value for method in AuthMethod}
    if name not in known:
        raise table.error(
            key, f"{name!r} is invalid; use one of: {describe_choices(known)}"
        )
    return AuthMethod(name)


def _check_piggyback(
    table: ConfigTable, methods: frozenset[AuthMethod], shared: SharedSettings
) -> None:
    if AuthMethod.PIGGYBACK in methods and shared.piggyback_database is None:
        raise ConfigurationError(
            f"piggyback.database: missing; {table.key('authentication')} includes "
            'piggyback, so add a [piggyback] table with database = "FILE", the '
            "SQLite file of web sessions"
        )


def _read_aaa_group_name(
    table: ConfigTable,
    methods: frozenset[AuthMethod],
    groups: Mapping[str, AaaGroupConfig],
) -> str | None:
    name = table.string("authentication_server_group")
    if name is None:
        # Method aaa without a group fails every login; serve and
        # check-config warn about it, and each failure is logged.
        return None
    if name not in groups:
        configured = describe_choices(groups) or "(no [aaa.NAME] group configured)"
        raise table.error(
            "authentication_server_group",
            f"{name!r} is not a configured AAA server group; use one of: {configured}",
        )
    return name


def _read_servers(
    table: ConfigTable, spec: ProtocolSpec, base: Path, methods: frozenset[AuthMethod]
) -> tuple[dict[str, UpstreamServer], dict[str, Path]]:
    servers: dict[str, UpstreamServer] = {}
    ca_files: dict[str, Path] = {}
    servers_table = table.table("servers")
    if servers_table is not None:
        for name, server_table in servers_table.subtables():
            servers[name] = _read_server(name, server_table, spec)
            ca_file = _read_existing_file(server_table, "ca_file", base)
            if ca_file is not None:
                ca_files[name] = ca_file
    # Even without mailhost the proxy must know where to relay the session.
    if not servers:
        raise table.error(
            "servers", f"missing; add at least one [{table.path}.servers.NAME] table"
        )
    return servers, ca_files


def _read_server(name: str, table: ConfigTable, spec: ProtocolSpec) -> UpstreamServer:
    table.reject_unknown(_SERVER_KEYS)
    server = _read_connection(table, spec, name, table.required_string("host"))
    forward = table.boolean("forward_client_address", False)
    return dataclasses.replace(server, forward_client_address=forward)


def _read_connection(
    table: ConfigTable, spec: ProtocolSpec, name: str, host: str
) -> UpstreamServer:
    tls_names = {mode.value for mode in UpstreamTLS}
    tls = UpstreamTLS(table.choice("tls", tls_names, UpstreamTLS.NONE.value))
    implicit = tls is UpstreamTLS.IMPLICIT
    default_port = spec.upstream_tls_port if implicit else spec.upstream_port
    port = table.integer("port", default_port, minimum=1)
    if port > 65535:
        raise table.error("port", f"{port} is invalid; use 1 to 65535")
    verify = table.boolean("verify", True)
    return UpstreamServer(name=name, host=host, port=port, tls=tls, verify=verify)


def _read_any_server(table: ConfigTable, spec: ProtocolSpec) -> UpstreamServer | None:
    # Off by default: with it, anyone who passes the VPN checks can make the
    # proxy connect to any host it can reach, internal ones included.
    allowed = table.boolean("allow_any_server", False)
    template = table.table("any_server")
    if not allowed:
        if template is not None:
            raise table.error(
                "any_server", "set allow_any_server = true, or remove this table"
            )
        return None
    if template is None:
        template = ConfigTable({}, table.key("any_server"))
    template.reject_unknown({"port", "tls", "verify"})
    return _read_connection(template, spec, "*", "*")


def _read_timeouts(table: ConfigTable | None, spec: ProtocolSpec) -> Timeouts:
    defaults = Timeouts(idle_authenticated=spec.idle_authenticated)
    if table is None:
        return defaults
    names = [field.name for field in dataclasses.fields(Timeouts)]
    table.reject_unknown(names)
    values = {name: table.seconds(name, getattr(defaults, name)) for name in names}
    return Timeouts(**values)


def _read_limits(table: ConfigTable | None, spec: ProtocolSpec) -> Limits | None:
    # None leaves the protocol's own limits to the session class.
    if table is None:
        return None
    table.reject_unknown(_LIMIT_KEYS)
    defaults = default_limits(spec)
    values = {
        name: table.integer(name, getattr(defaults, name), minimum=_minimum(name))
        for name in _LIMIT_KEYS
    }
    return Limits(**values)


def _minimum(limit_name: str) -> int:
    # POP3 and SMTP have no literals, so their literal limit is 0.
    return 0 if limit_name == "max_literal" else 1


def _read_session(
    table: ConfigTable,
    spec: ProtocolSpec,
    methods: frozenset[AuthMethod],
    servers: Mapping[str, UpstreamServer],
    shared: SharedSettings,
) -> SessionSettings:
    own_delimiters = read_delimiters(table.table("delimiters"), shared.delimiters)
    _check_server_names(table, servers, own_delimiters)
    default_server = table.string("default_server")
    if default_server is not None and default_server not in servers:
        raise table.error(
            "default_server",
            f"{default_server!r} is not a configured server; "
            f"use one of: {describe_choices(servers)}",
        )
    return SessionSettings(
        methods=methods,
        servers=MappingProxyType(dict(servers)),
        default_server=default_server,
        delimiters=own_delimiters,
        max_auth_attempts=table.integer("max_auth_attempts", 3, minimum=1),
        starttls_required=_read_starttls(table),
        limits=_read_limits(table.table("limits"), spec),
        greeting=_read_greeting(table),
        certificate_username=read_certificate_username(table, methods),
        group_policies=shared.policies,
        default_group_policy=_read_default_policy(table, shared.policies),
        any_server=_read_any_server(table, spec),
    )


def _read_default_policy(
    table: ConfigTable, policies: Mapping[str, GroupPolicy]
) -> GroupPolicy:
    name = table.string("default_group_policy")
    if name is None:
        return OPEN_POLICY
    policy = policies.get(name)
    if policy is None:
        configured = describe_choices(policies) or "(no [group_policy.NAME] table)"
        raise table.error(
            "default_group_policy",
            f"{name!r} is not a configured group policy; use one of: {configured}",
        )
    return policy


def _check_server_names(
    table: ConfigTable, servers: Mapping[str, UpstreamServer], delimiters: Delimiters
) -> None:
    # A user selects a server by the text after the last server separator,
    # so a name that contains the separator could never be selected.
    for name in servers:
        if delimiters.server_separator in name:
            raise table.error(
                f"servers.{name}",
                f"server names must not contain the server separator "
                f"{delimiters.server_separator!r}",
            )


def _read_starttls(table: ConfigTable) -> bool:
    if "starttls" not in table:
        return False
    table.choice("starttls", {"required"}, "required")
    return True


def _read_greeting(table: ConfigTable) -> str:
    greeting = table.string("greeting", "mailproxy ready")
    assert greeting is not None
    if any(character in greeting for character in "\r\n\x00"):
        raise table.error("greeting", "must not contain CR, LF or NUL")
    return greeting

"""The proxy's TOML configuration, validated into frozen dataclasses.

:func:`load_config` reads the file with :mod:`tomllib` and checks every key.
A bad key raises :class:`~mailproxy_core.errors.ConfigurationError` whose
message starts with the dotted key and lists the allowed values. File paths
in the configuration are relative to the folder of the configuration file.

Top-level keys: ``drain_timeout`` (seconds, default 30), ``accounting_file``
(optional JSON-lines file), ``[logging] level``, ``[delimiters]``, one
``[aaa.NAME]`` table per AAA server group, one ``[group_policy.NAME]``
table per group policy, ``[piggyback]`` for method ``piggyback`` and one
table per protocol of :data:`~mailproxy_core.proxy.protocols.PROTOCOLS`.
The listener keys are described in
:mod:`mailproxy_core.proxy.listenerconfig`.

``[piggyback]`` has the keys ``database`` (required: the SQLite file that
the web portal writes, described in :mod:`mailproxy_core.proxy.piggyback`)
and ``timeout`` (seconds that one check may take, default 5). The proxy
only reads the file, and it need not exist at start-up.

A group policy is named by the group that an AAA server returns for a
user, and the ``local`` type takes that group from the users file. The
keys of a policy are ``protocols`` (the listeners its users may use),
``servers`` (the upstream names they may select) and
``max_sessions_per_user``. An absent key sets no restriction.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final

from ..delimiters import Delimiters
from ..errors import ConfigurationError
from ..secrets import Secret
from ..settings import GroupPolicy
from .configtable import ConfigTable, describe_choices
from .listenerconfig import (
    ListenAddress,
    ListenerConfig,
    SharedSettings,
    read_delimiters,
    read_listener,
)
from .piggyback import DEFAULT_TIMEOUT, PiggybackConfig
from .protocols import PROTOCOLS

#: Types of AAA server group that the proxy implements.
SUPPORTED_AAA_TYPES: Final = frozenset({"local", "ldap", "radius"})

#: Types of AAA server group that the configuration accepts, implemented or not.
KNOWN_AAA_TYPES: Final = SUPPORTED_AAA_TYPES | {"ldap", "radius"}

#: Names accepted by ``[logging] level``.
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_TOP_LEVEL_KEYS: Final = frozenset(
    {
        "delimiters",
        "aaa",
        "group_policy",
        "logging",
        "drain_timeout",
        "accounting_file",
        "piggyback",
        *PROTOCOLS,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AaaGroupConfig:
    """One ``[aaa.NAME]`` AAA server group.

    :param name: the group name that listeners refer to.
    :param type: the back end: ``local``, ``ldap`` or ``radius``.
    :param users_file: for ``local``, the file that ``mailproxy user``
        manages; ``None`` for the other types.
    :param options: for ``ldap`` and ``radius``, the keyword arguments of
        :class:`~mailproxy_core.proxy.ldapgroup.LdapAaaGroup` or
        :class:`~mailproxy_core.proxy.radiusgroup.RadiusAaaGroup`; the
        bind password and shared secret are
        :class:`~mailproxy_core.secrets.Secret` values.
    """

    name: str
    type: str
    users_file: Path | None = None
    options: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    """The whole configuration of one proxy process.

    :param path: the configuration file.
    :param delimiters: the credential separators shared by all listeners
        that set none of their own.
    :param aaa_groups: the AAA server groups by name.
    :param listeners: the configured protocols by section name, including
        sections without a ``listen`` key.
    :param drain_timeout: seconds that authenticated sessions may go on
        after a stop signal.
    :param log_level: the ``logging`` level name.
    :param accounting_file: where a JSON line per ended session goes, or
        ``None`` for the log only.
    :param piggyback: the web sessions database of method ``piggyback``, or
        ``None`` without a ``[piggyback]`` table.
    :param group_policies: the ``[group_policy.NAME]`` tables by name.
    """

    path: Path
    delimiters: Delimiters
    aaa_groups: Mapping[str, AaaGroupConfig]
    listeners: Mapping[str, ListenerConfig] = field(
        default_factory=lambda: MappingProxyType({})
    )
    drain_timeout: float = 30.0
    log_level: str = "INFO"
    accounting_file: Path | None = None
    piggyback: PiggybackConfig | None = None
    group_policies: Mapping[str, GroupPolicy] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def active_listeners(self) -> list[ListenerConfig]:
        """Return the listeners that have at least one ``listen`` address."""
        return [listener for listener in self.listeners.values() if listener.listen]


def load_config(path: str | Path) -> ProxyConfig:
    """Read and validate the configuration file at ``path``.

    :raises ConfigurationError: when the file cannot be read, is no valid
        TOML, or any key is invalid; the message names the key.
    """
    config_path = Path(path)
    try:
        with config_path.open("rb") as file:
            document = tomllib.load(file)
    except OSError as error:
        raise ConfigurationError(
            f"cannot read configuration file {str(config_path)!r}: {error.strerror}"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"{config_path}: invalid TOML: {error}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(
            f"{config_path}: not UTF-8 text; TOML files must be UTF-8"
        ) from None
    return parse_config(document, config_path)


def parse_config(document: Mapping[str, object], path: Path) -> ProxyConfig:
    """Validate an already parsed TOML ``document`` read from ``path``.

    :raises ConfigurationError: naming the first invalid key.
    """
    top = ConfigTable(document)
    top.reject_unknown(_TOP_LEVEL_KEYS)
    base = path.parent
    delimiters = read_delimiters(top.table("delimiters"), Delimiters())
    piggyback = _read_piggyback(top.table("piggyback"), base)
    shared = SharedSettings(
        base=base,
        delimiters=delimiters,
        groups=_read_aaa_groups(top.table("aaa"), base),
        policies=MappingProxyType(_read_policies(top.table("group_policy"))),
        piggyback_database=piggyback.database if piggyback else None,
    )
    listeners = _read_listeners(top, shared)
    _check_listen_conflicts(listeners.values())
    accounting = top.string("accounting_file")
    return ProxyConfig(
        path=path,
        delimiters=delimiters,
        aaa_groups=MappingProxyType(dict(shared.groups)),
        listeners=MappingProxyType(listeners),
        drain_timeout=top.seconds("drain_timeout", 30.0),
        log_level=_read_log_level(top.table("logging")),
        accounting_file=base / accounting if accounting else None,
        piggyback=piggyback,
        group_policies=shared.policies,
    )


def _read_piggyback(table: ConfigTable | None, base: Path) -> PiggybackConfig | None:
    if table is None:
        return None
    table.reject_unknown({"database", "timeout"})
    return PiggybackConfig(
        database=base / table.required_string("database"),
        timeout=table.seconds("timeout", DEFAULT_TIMEOUT),
    )


def _read_aaa_groups(
    table: ConfigTable | None, base: Path
) -> dict[str, AaaGroupConfig]:
    if table is None:
        return {}
    return {
        name: _read_aaa_group(name, group, base) for name, group in table.subtables()
    }


def _read_aaa_group(name: str, table: ConfigTable, base: Path) -> AaaGroupConfig:
    group_type = table.choice("type", KNOWN_AAA_TYPES, "local")
    if group_type == "ldap":
        options = _read_ldap_options(table, base)
    elif group_type == "radius":
        options = _read_radius_options(table, base)
    else:
        table.reject_unknown({"type", "users_file"})
        users_file = base / table.required_string("users_file")
        return AaaGroupConfig(name=name, type=group_type, users_file=users_file)
    return AaaGroupConfig(name=name, type=group_type, options=options)


def _read_ldap_options(table: ConfigTable, base: Path) -> dict[str, object]:
    table.reject_unknown(
        {
            "type",
            "url",
            "base_dn",
            "user_filter",
            "bind_dn",
            "bind_password",
            "group_attribute",
            "timeout",
            "ca_file",
            "start_tls",
        }
    )
    options: dict[str, object] = {
        "url": table.required_string("url"),
        "base_dn": table.required_string("base_dn"),
        "timeout": table.seconds("timeout", 5.0),
        "start_tls": table.boolean("start_tls", False),
    }
    for key in ("user_filter", "bind_dn", "group_attribute"):
        value = table.string(key)
        if value is not None:
            options[key] = value
    password = table.string("bind_password")
    if password is not None:
        options["bind_password"] = Secret(password)
    ca_file = table.string("ca_file")
    if ca_file is not None:
        options["ca_file"] = base / ca_file
    return options


def _read_radius_options(table: ConfigTable, base: Path) -> dict[str, object]:
    table.reject_unknown(
        {
            "type",
            "host",
            "port",
            "secret",
            "timeout",
            "retries",
            "nas_identifier",
            "dictionary",
            "require_message_authenticator",
        }
    )
    options: dict[str, object] = {
        "host": table.required_string("host"),
        "port": table.integer("port", 1812, minimum=1),
        "secret": Secret(table.required_string("secret")),
        "timeout": table.seconds("timeout", 5.0),
        "retries": table.integer("retries", 2),
        "require_message_authenticator": table.boolean(
            "require_message_authenticator", True
        ),
    }
    nas_identifier = table.string("nas_identifier")
    if nas_identifier is not None:
        options["nas_identifier"] = nas_identifier
    dictionary = table.string("dictionary")
    if dictionary is not None:
        options["dictionary"] = base / dictionary
    return options


def _read_listeners(
    top: ConfigTable, shared: SharedSettings
) -> dict[str, ListenerConfig]:
    listeners = {}
    for name, spec in PROTOCOLS.items():
        table = top.table(name)
        if table is not None:
            listeners[name] = read_listener(table, spec, shared)
    return listeners


def _read_policies(table: ConfigTable | None) -> dict[str, GroupPolicy]:
    if table is None:
        return {}
    return {name: _read_policy(name, policy) for name, policy in table.subtables()}


def _read_policy(name: str, table: ConfigTable) -> GroupPolicy:
    table.reject_unknown({"protocols", "servers", "max_sessions_per_user"})
    protocols = table.string_list("protocols")
    for index, protocol in enumerate(protocols or []):
        if protocol not in PROTOCOLS:
            raise table.error(
                f"protocols[{index}]",
                f"{protocol!r} is invalid; use one of: {describe_choices(PROTOCOLS)}",
            )
    servers = table.string_list("servers")
    maximum = table.raw("max_sessions_per_user")
    return GroupPolicy(
        name=name,
        protocols=frozenset(protocols) if protocols is not None else None,
        servers=frozenset(servers) if servers is not None else None,
        max_sessions_per_user=(
            table.integer("max_sessions_per_user", 1, minimum=1)
            if maximum is not None
            else None
        ),
    )


def _check_listen_conflicts(listeners: Iterable[ListenerConfig]) -> None:
    owners: dict[ListenAddress, str] = {}
    for listener in listeners:
        # Port 0 binds a different free port each time, so it never clashes.
        for address in (a for a in listener.listen if a.port != 0):
            other = owners.get(address)
            if other is not None:
                raise ConfigurationError(
                    f"{listener.protocol}.listen: {address} is also used by "
                    f"{other}.listen; give each listener its own address"
                )
            owners[address] = listener.protocol


def _read_log_level(table: ConfigTable | None) -> str:
    if table is None:
        return "INFO"
    table.reject_unknown({"level"})
    level = table.string("level", "INFO")
    assert level is not None
    if level.upper() not in LOG_LEVELS:
        raise table.error(
            "level", f"{level!r} is invalid; use one of: {', '.join(LOG_LEVELS)}"
        )
    return level.upper()

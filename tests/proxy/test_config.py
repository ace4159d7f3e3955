"""Tests of the proxy's TOML configuration loader."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from mailproxy_core.delimiters import Delimiters
from mailproxy_core.errors import ConfigurationError
from mailproxy_core.proxy.config import ProxyConfig, load_config, parse_config
from mailproxy_core.proxy.listenerconfig import ListenAddress, parse_listen_address
from mailproxy_core.settings import (
    OPEN_POLICY,
    AuthMethod,
    GroupPolicy,
    Limits,
    UpstreamTLS,
)

BASE: dict[str, Any] = {
    "aaa": {"LOCAL": {"type": "local", "users_file": "users.db"}},
    "imap4s": {
        "listen": "127.0.0.1:9993",
        "authentication": ["aaa", "mailhost"],
        "authentication_server_group": "LOCAL",
        "default_server": "mail",
        "servers": {"mail": {"host": "127.0.0.1", "port": 143, "tls": "none"}},
    },
}


TOP_LEVEL = frozenset(
    {
        "aaa",
        "group_policy",
        "delimiters",
        "logging",
        "drain_timeout",
        "accounting_file",
        "pop3s",
        "smtps",
        "bogus",
    }
)


def parse(tmp_path: Path, **changes: Any) -> ProxyConfig:
    """Parse :data:`BASE` with top-level keys or ``imap4s`` keys replaced.

    A key of ``changes`` that names a top-level table replaces it; any other
    key goes into ``[imap4s]``, where ``None`` removes it.
    """
    document = copy.deepcopy(BASE)
    for key, value in changes.items():
        if key in TOP_LEVEL:
            document[key] = value
        elif value is None:
            del document["imap4s"][key]
        else:
            document["imap4s"][key] = value
    return parse_config(document, tmp_path / "proxy.toml")


def error_of(tmp_path: Path, **changes: Any) -> str:
    """Return the message of the ConfigurationError that ``changes`` cause."""
    with pytest.raises(ConfigurationError) as caught:
        parse(tmp_path, **changes)
    return str(caught.value)


# Valid configurations


def test_base_builds_session_settings(tmp_path: Path) -> None:
    config = parse(tmp_path)
    listener = config.listeners["imap4s"]
    settings = listener.session
    assert listener.listen == (ListenAddress(host="127.0.0.1", port=9993),)
    assert settings.methods == frozenset({AuthMethod.AAA, AuthMethod.MAILHOST})
    assert settings.default_server == "mail"
    assert settings.servers["mail"].port == 143
    assert settings.servers["mail"].tls is UpstreamTLS.NONE
    assert settings.delimiters == Delimiters()
    assert settings.max_auth_attempts == 3
    assert settings.starttls_required is False
    assert settings.limits is None
    assert settings.default_group_policy == OPEN_POLICY


def test_defaults(tmp_path: Path) -> None:
    config = parse(tmp_path)
    listener = config.listeners["imap4s"]
    assert config.drain_timeout == 30.0
    assert config.log_level == "INFO"
    assert config.accounting_file is None
    assert listener.outstanding == 20
    assert listener.certificate is None
    assert listener.timeouts.handshake == 10.0
    assert listener.timeouts.idle_unauthenticated == 60.0
    assert listener.timeouts.aaa == 5.0
    assert listener.timeouts.upstream == 10.0
    assert listener.timeouts.idle_authenticated == 1800.0


def test_paths_relative_to_config_folder(tmp_path: Path) -> None:
    config = parse(tmp_path, accounting_file="logs/accounting.jsonl")
    assert config.aaa_groups["LOCAL"].users_file == tmp_path / "users.db"
    assert config.accounting_file == tmp_path / "logs/accounting.jsonl"


def test_listen_list_with_ipv6(tmp_path: Path) -> None:
    config = parse(tmp_path, listen=["127.0.0.1:9993", "[::1]:9994", "localhost"])
    assert config.listeners["imap4s"].listen == (
        ListenAddress(host="127.0.0.1", port=9993),
        ListenAddress(host="::1", port=9994),
        ListenAddress(host="localhost", port=993),
    )
    assert str(config.listeners["imap4s"].listen[1]) == "[::1]:9994"


def test_no_listen_means_no_listener(tmp_path: Path) -> None:
    config = parse(tmp_path, listen=None)
    assert config.listeners["imap4s"].listen == ()
    assert config.active_listeners() == []


def test_timeouts_limits_and_options(tmp_path: Path) -> None:
    config = parse(
        tmp_path,
        timeouts={"handshake": 2, "idle_authenticated": 0.5},
        limits={"max_line": 1000},
        outstanding=0,
        max_auth_attempts=5,
        starttls="required",
        greeting="hello",
    )
    listener = config.listeners["imap4s"]
    assert listener.timeouts.handshake == 2.0
    assert listener.timeouts.idle_authenticated == 0.5
    assert listener.timeouts.aaa == 5.0
    limits = listener.session.limits
    assert limits is not None
    assert limits.max_line == 1000
    assert limits.max_literal == Limits().max_literal
    assert listener.outstanding == 0
    assert listener.session.max_auth_attempts == 5
    assert listener.session.starttls_required is True
    assert listener.session.greeting == "hello"


def test_delimiters_shared_and_overridden(tmp_path: Path) -> None:
    shared = {"name_separator": "#", "server_separator": "|"}
    config = parse(tmp_path, delimiters=shared)
    assert config.listeners["imap4s"].session.delimiters == Delimiters(
        name_separator="#", server_separator="|"
    )

    document = copy.deepcopy(BASE)
    document["delimiters"] = shared
    document["imap4s"]["delimiters"] = {"name_separator": ";"}
    own = parse_config(document, tmp_path / "proxy.toml")
    assert own.listeners["imap4s"].session.delimiters == Delimiters(
        name_separator=";", server_separator="|"
    )


def test_server_port_defaults_by_tls(tmp_path: Path) -> None:
    servers = {
        "plain": {"host": "127.0.0.1"},
        "secure": {"host": "127.0.0.1", "tls": "implicit", "verify": False},
    }
    config = parse(tmp_path, servers=servers, default_server="plain")
    session = config.listeners["imap4s"].session
    assert session.servers["plain"].port == 143
    assert session.servers["secure"].port == 993
    assert session.servers["secure"].verify is False


def test_ca_file_resolved(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("placeholder")
    servers = {"mail": {"host": "127.0.0.1", "tls": "starttls", "ca_file": "ca.pem"}}
    config = parse(tmp_path, servers=servers)
    assert config.listeners["imap4s"].upstream_ca_files == {"mail": tmp_path / "ca.pem"}


def test_log_level_case_insensitive(tmp_path: Path) -> None:
    assert parse(tmp_path, logging={"level": "debug"}).log_level == "DEBUG"


def test_load_config_reads_toml(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(
        '[aaa.LOCAL]\ntype = "local"\nusers_file = "u.db"\n'
        '[imap4s]\nlisten = "127.0.0.1:1993"\nauthentication_server_group = "LOCAL"\n'
        '[imap4s.servers.mail]\nhost = "127.0.0.1"\n'
    )
    config = load_config(path)
    assert config.listeners["imap4s"].listen[0].port == 1993
    assert config.listeners["imap4s"].session.default_server is None


def test_example_configuration_is_valid() -> None:
    example = Path(__file__).parents[2] / "examples" / "proxy.toml"
    config = load_config(example)
    listener = config.listeners["imap4s"]
    assert listener.listen == (ListenAddress(host="127.0.0.1", port=9993),)
    assert listener.certificate is None
    assert config.aaa_groups["LOCAL"].users_file == example.parent / "users.db"


# Invalid configurations: each message names the key and what is allowed


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"authentication": ["aaa", "foo"]},
            "imap4s.authentication[1]: 'foo' is invalid; "
            "use one of: aaa, certificate, mailhost, piggyback",
        ),
        (
            {"authentication": ["aaa", "certificate", "mailhost"]},
            "imap4s.client_ca: missing; authentication includes certificate",
        ),
        (
            {"authentication": ["aaa"]},
            "imap4s.authentication: IMAP4S requires mailhost",
        ),
        ({"authentication": []}, "imap4s.authentication: must name at least one"),
        (
            {"authentication": "aaa, mailhost"},
            "imap4s.authentication[0]: 'aaa, mailhost'",
        ),
        ({"authentication": [1]}, "imap4s.authentication[0]: expected a string, got 1"),
        (
            {"authentication_server_group": "RADIUS1"},
            "imap4s.authentication_server_group: 'RADIUS1' is not a configured "
            "AAA server group; use one of: LOCAL",
        ),
        (
            {"default_server": "nosuch"},
            "imap4s.default_server: 'nosuch' is not a configured server; "
            "use one of: mail",
        ),
        ({"outstanding": -1}, "imap4s.outstanding: -1 is too small; use 0 or more"),
        ({"outstanding": "20"}, "imap4s.outstanding: expected an integer, got '20'"),
        ({"outstanding": True}, "imap4s.outstanding: expected an integer, got True"),
        ({"max_auth_attempts": 0}, "imap4s.max_auth_attempts: 0 is too small"),
        (
            {"starttls": "optional"},
            "imap4s.starttls: 'optional' is invalid; use one of: required",
        ),
        ({"listen": "127.0.0.1:99999"}, "imap4s.listen[0]: '127.0.0.1:99999' has an"),
        ({"listen": ":993"}, "imap4s.listen[0]: ':993' has no host"),
        ({"listen": "[::1:993"}, "imap4s.listen[0]: '[::1:993' is invalid"),
        ({"listen": "[zz]:993"}, "imap4s.listen[0]: '[zz]:993' contains no valid IPv6"),
        ({"listen": 993}, "imap4s.listen: expected a string or a list, got 993"),
        (
            {"listen": ["127.0.0.1:9993", "127.0.0.1:9993"]},
            "imap4s.listen: 127.0.0.1:9993 is also used by imap4s.listen",
        ),
        ({"lisen": "127.0.0.1:993"}, "imap4s.lisen: unknown key; use one of:"),
        ({"timeouts": {"aaa": 0}}, "imap4s.timeouts.aaa: 0 is invalid; use a number"),
        ({"timeouts": {"aaa": "5s"}}, "imap4s.timeouts.aaa: expected a number"),
        ({"timeouts": {"login": 5}}, "imap4s.timeouts.login: unknown key"),
        ({"limits": {"max_line": 0}}, "imap4s.limits.max_line: 0 is too small"),
        ({"servers": None}, "imap4s.servers: missing; add at least one"),
        (
            {"servers": {"mail": {"port": 143}}},
            "imap4s.servers.mail.host: missing; this key is required",
        ),
        (
            {"servers": {"mail": {"host": "127.0.0.1", "tls": "ssl"}}},
            "imap4s.servers.mail.tls: 'ssl' is invalid; "
            "use one of: implicit, none, starttls",
        ),
        (
            {"servers": {"mail": {"host": "127.0.0.1", "port": 0}}},
            "imap4s.servers.mail.port: 0 is too small; use 1 or more",
        ),
        (
            {"servers": {"mail": {"host": "127.0.0.1", "port": 70000}}},
            "imap4s.servers.mail.port: 70000 is invalid; use 1 to 65535",
        ),
        (
            {"servers": {"mail": {"host": "127.0.0.1", "verify": "yes"}}},
            "imap4s.servers.mail.verify: expected true or false, got 'yes'",
        ),
        (
            {"servers": {"mail": {"host": "127.0.0.1", "ca_file": "nosuch.pem"}}},
            "imap4s.servers.mail.ca_file: file ",
        ),
        (
            {"servers": {"mail@x": {"host": "127.0.0.1"}}, "default_server": None},
            "imap4s.servers.mail@x: server names must not contain the server "
            "separator '@'",
        ),
        ({"certificate": "nosuch.pem"}, "imap4s.certificate: file "),
        ({"private_key": "key.pem"}, "imap4s.private_key: file "),
        ({"greeting": "hi\r\nthere"}, "imap4s.greeting: must not contain CR, LF"),
        (
            {"delimiters": {"name_separator": "@"}},
            "delimiters: name_separator and server_separator must differ",
        ),
        (
            {"aaa": {"LOCAL": {"type": "ldap", "users_file": "u"}}},
            "aaa.LOCAL.users_file: unknown key",
        ),
        (
            {"aaa": {"LOCAL": {"type": "ldap", "url": "ldap://127.0.0.1"}}},
            "aaa.LOCAL.base_dn: missing",
        ),
        (
            {"aaa": {"LOCAL": {"type": "radius", "secret": "s3cr3t-shared"}}},
            "aaa.LOCAL.host: missing",
        ),
        (
            {"aaa": {"LOCAL": {"type": "radius", "host": "127.0.0.1", "port": 0}}},
            "aaa.LOCAL.port: ",
        ),
        (
            {"aaa": {"LOCAL": {"type": "kerberos"}}},
            "aaa.LOCAL.type: 'kerberos' is invalid; use one of: ldap, local, radius",
        ),
        ({"aaa": {"LOCAL": {"type": "local"}}}, "aaa.LOCAL.users_file: missing"),
        ({"aaa": {"LOCAL": "local"}}, "aaa.LOCAL: expected a table, got 'local'"),
        (
            {"delimiters": {"name_separator": "x"}},
            "delimiters: name_separator = 'x' is invalid; use one of: # , : ; @ |",
        ),
        ({"delimiters": {"separator": ":"}}, "delimiters.separator: unknown key"),
        (
            {"logging": {"level": "LOUD"}},
            "logging.level: 'LOUD' is invalid; use one of: DEBUG, INFO, WARNING",
        ),
        ({"drain_timeout": -1}, "drain_timeout: -1 is invalid; use a number above 0"),
        ({"bogus": {}}, "bogus: unknown key; use one of: aaa, accounting_file"),
        (
            {"default_group_policy": "staff"},
            "imap4s.default_group_policy: 'staff' is not a configured group "
            "policy; use one of: (no [group_policy.NAME] table)",
        ),
        (
            {"group_policy": {"staff": {"protocols": ["imap"]}}},
            "group_policy.staff.protocols[0]: 'imap' is invalid; "
            "use one of: imap4s, pop3s, smtps",
        ),
        (
            {"group_policy": {"staff": {"max_sessions_per_user": 0}}},
            "group_policy.staff.max_sessions_per_user: 0 is too small",
        ),
        (
            {"group_policy": {"staff": {"max_sessions": 1}}},
            "group_policy.staff.max_sessions: unknown key",
        ),
    ],
)
def test_invalid_key_named(
    tmp_path: Path, changes: dict[str, Any], expected: str
) -> None:
    assert error_of(tmp_path, **changes).startswith(expected)


def test_private_key_needs_certificate(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("placeholder")
    message = error_of(tmp_path, private_key="key.pem")
    assert message == "imap4s.private_key: set certificate too, or remove this key"


def test_listen_address_shared_between_protocols(tmp_path: Path) -> None:
    pop3s = {
        "listen": "127.0.0.1:9993",
        "authentication": ["mailhost"],
        "servers": {"mail": {"host": "127.0.0.1"}},
    }
    message = error_of(tmp_path, pop3s=pop3s)
    assert message.startswith("pop3s.listen: 127.0.0.1:9993 is also used by imap4s")


def test_pop3s_defaults_from_protocol_table(tmp_path: Path) -> None:
    pop3s = {
        "listen": "127.0.0.1",
        "authentication": ["mailhost"],
        "servers": {"mail": {"host": "127.0.0.1", "tls": "implicit"}},
    }
    listener = parse(tmp_path, pop3s=pop3s).listeners["pop3s"]
    assert listener.listen == (ListenAddress(host="127.0.0.1", port=995),)
    assert listener.timeouts.idle_authenticated == 600.0
    assert listener.session.limits is None
    assert listener.session.servers["mail"].port == 995


def test_limits_start_from_protocol_defaults(tmp_path: Path) -> None:
    pop3s = {
        "authentication": ["mailhost"],
        "limits": {"max_commands": 10},
        "servers": {"mail": {"host": "127.0.0.1"}},
    }
    limits = parse(tmp_path, pop3s=pop3s).listeners["pop3s"].session.limits
    assert limits == Limits(
        max_line=255, max_sasl_line=12288, max_literal=0, max_commands=10
    )


def test_group_policies(tmp_path: Path) -> None:
    policies = {
        "staff": {
            "protocols": ["imap4s"],
            "servers": ["mail"],
            "max_sessions_per_user": 2,
        },
        "guests": {},
    }
    config = parse(tmp_path, group_policy=policies, default_group_policy="guests")
    session = config.listeners["imap4s"].session
    assert session.group_policies["staff"] == GroupPolicy(
        name="staff",
        protocols=frozenset({"imap4s"}),
        servers=frozenset({"mail"}),
        max_sessions_per_user=2,
    )
    assert session.default_group_policy == GroupPolicy(name="guests")


def test_missing_file_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read configuration file"):
        load_config(tmp_path / "nosuch.toml")


def test_invalid_toml_named(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text("[imap4s\nlisten = 1\n")
    with pytest.raises(ConfigurationError, match="invalid TOML"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:993", ListenAddress(host="127.0.0.1", port=993)),
        ("127.0.0.1", ListenAddress(host="127.0.0.1", port=143)),
        ("[::1]:993", ListenAddress(host="::1", port=993)),
        ("[::1]", ListenAddress(host="::1", port=143)),
        ("::1", ListenAddress(host="::1", port=143)),
        ("localhost:0", ListenAddress(host="localhost", port=0)),
    ],
)
def test_parse_listen_address(text: str, expected: ListenAddress) -> None:
    assert parse_listen_address(text, 143) == expected


@pytest.mark.parametrize("text", ["", "host:", "host:x", "[::1]x", "::zz", "h:-1"])
def test_parse_listen_address_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen_address(text, 143)


def test_aaa_without_group_warns(tmp_path: Path) -> None:
    document = {
        "imap4s": {
            "listen": "127.0.0.1:0",
            "authentication": ["aaa", "mailhost"],
            "servers": {"mail": {"host": "127.0.0.1"}},
        }
    }
    listener = parse_config(document, tmp_path / "proxy.toml").listeners["imap4s"]
    assert listener.aaa_group is None
    assert listener.warnings() == [
        "imap4s: authentication includes aaa but no authentication_server_group "
        "is set, so every login fails"
    ]

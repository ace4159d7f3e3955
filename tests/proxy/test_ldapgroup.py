"""Tests of the ``ldap`` AAA server group that need no LDAP server.

The end-to-end tests against slapd are in tests/e2e/test_ldap_group.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import ldap
import pytest

from mailproxy_core.errors import ConfigurationError
from mailproxy_core.proxy.ldapgroup import (
    LdapAaaGroup,
    check_credentials,
    describe_ldap_error,
    escape_filter_value,
)
from mailproxy_core.secrets import Secret

# Nothing is sent to this address: the tests below fail before any
# connection, or only construct groups.
URL = "ldap://127.0.0.1:1"
BASE_DN = "dc=example,dc=org"


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("vpnuser", "vpnuser"),
        ("*", r"\2a"),
        ("vpn*", r"vpn\2a"),
        ("(", r"\28"),
        (")", r"\29"),
        ("\\", r"\5c"),
        ("\x00", r"\00"),
        ("a)(uid=*", r"a\29\28uid=\2a"),
        (r"\2a", r"\5c2a"),
        ("jürgen", "jürgen"),
    ],
)
def test_escape_filter_value(value: str, escaped: str) -> None:
    assert escape_filter_value(value) == escaped


@pytest.mark.parametrize(
    ("user", "password", "reason"),
    [
        ("", "pw", "empty user name"),
        ("vpn\x00user", "pw", "user name contains NUL, CR or LF"),
        ("vpnuser\r", "pw", "user name contains NUL, CR or LF"),
        ("vpn\nuser", "pw", "user name contains NUL, CR or LF"),
        ("vpnuser", "", "empty password"),
    ],
)
def test_check_credentials_rejects(user: str, password: str, reason: str) -> None:
    assert check_credentials(user, password) == reason


def test_check_credentials_accepts() -> None:
    assert check_credentials("vpn*", "pass word") is None


def test_empty_password_fails_before_connecting() -> None:
    group = LdapAaaGroup("directory", url=URL, base_dn=BASE_DN)
    result = asyncio.run(group.authenticate("vpnuser", ""))
    assert not result.success
    assert result.reason == "empty password"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"url": "http://127.0.0.1"}, "url"),
        ({"url": "ldap://"}, "url"),
        ({"url": ""}, "url"),
        ({"url": "ldaps://127.0.0.1", "start_tls": True}, "start_tls"),
        ({"base_dn": ""}, "base_dn"),
        ({"base_dn": "not a dn"}, "base_dn"),
        ({"user_filter": "(uid=%s)"}, "user_filter"),
        ({"user_filter": "uid={user}"}, "user_filter"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1.0}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"bind_dn": "cn=reader,dc=example,dc=org"}, "bind_password"),
        (
            {"bind_dn": "cn=reader,dc=example,dc=org", "bind_password": ""},
            "bind_password",
        ),
        ({"bind_password": "secret"}, "bind_dn"),
        ({"bind_dn": "reader", "bind_password": "secret"}, "bind_dn"),
        ({"ca_file": "/nonexistent/ca.pem"}, "ca_file"),
    ],
)
def test_invalid_settings(overrides: dict[str, Any], key: str) -> None:
    settings: dict[str, Any] = {"url": URL, "base_dn": BASE_DN}
    settings.update(overrides)
    with pytest.raises(ConfigurationError, match=f"^{key}: "):
        LdapAaaGroup("directory", **settings)


def test_valid_settings(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("")
    group = LdapAaaGroup(
        "directory",
        url="ldaps://ldap.example.org:636",
        base_dn=BASE_DN,
        user_filter="(&(objectClass=person)(mail={user}))",
        bind_dn="cn=reader,dc=example,dc=org",
        bind_password=Secret("secret"),
        group_attribute="ou",
        timeout=2.5,
        ca_file=ca_file,
    )
    assert group.name == "directory"


def test_clear_text_url_warns(caplog: pytest.LogCaptureFixture) -> None:
    LdapAaaGroup("directory", url=URL, base_dn=BASE_DN)
    assert "sends passwords in clear text" in caplog.text


def test_start_tls_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    LdapAaaGroup("directory", url=URL, base_dn=BASE_DN, start_tls=True)
    assert "clear text" not in caplog.text


def test_bind_password_not_in_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigurationError) as raised:
        LdapAaaGroup(
            "directory", url=URL, base_dn=BASE_DN, bind_dn="x", bind_password="pw-123"
        )
    assert "pw-123" not in str(raised.value)
    assert "pw-123" not in caplog.text


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (
            ldap.SERVER_DOWN({"desc": "Can't contact LDAP server"}),
            "Can't contact LDAP server",
        ),
        (
            ldap.SERVER_DOWN(
                {"desc": "Can't contact LDAP server", "info": "(unknown error code)"}
            ),
            "Can't contact LDAP server",
        ),
        (
            ldap.UNWILLING_TO_PERFORM(
                {"desc": "Server is unwilling to perform", "info": "no"}
            ),
            "Server is unwilling to perform: no",
        ),
        (ldap.LDAPError("plain text"), "plain text"),
        (ldap.LDAPError(), "LDAPError"),
    ],
)
def test_describe_ldap_error(error: Exception, text: str) -> None:
    assert describe_ldap_error(error) == text

"""End-to-end tests of the ``ldap`` AAA server group against a real slapd."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mailproxy_core.proxy.aaa import AaaResult
from mailproxy_core.proxy.ldapgroup import LdapAaaGroup

from .ldapserver import (
    BASE_DN,
    GROUP_ATTRIBUTE,
    HOST,
    SERVICE_DN,
    SERVICE_PASSWORD,
    LdapServer,
)

pytestmark = pytest.mark.e2e

#: Seconds that slapd may take to write a log line after its reply.
LOG_TIMEOUT = 5.0


def make_group(slapd: LdapServer, **overrides: Any) -> LdapAaaGroup:
    """Return a group that searches anonymously over plain LDAP."""
    settings: dict[str, Any] = {
        "url": slapd.url,
        "base_dn": BASE_DN,
        "group_attribute": GROUP_ATTRIBUTE,
    }
    settings.update(overrides)
    return LdapAaaGroup("directory", **settings)


def login(group: LdapAaaGroup, user: str, password: str) -> AaaResult:
    return asyncio.run(group.authenticate(user, password))


def wait_for_bind(slapd: LdapServer, dn: str, count: int) -> list[str]:
    """Wait until the log shows ``count`` bind requests, the last one as ``dn``.

    :returns: The bind request lines.
    """
    deadline = time.monotonic() + LOG_TIMEOUT
    while True:
        lines = bind_requests(slapd)
        if len(lines) >= count and f'dn="{dn}"' in lines[-1]:
            return lines
        if time.monotonic() > deadline:
            pytest.fail(f"slapd logged no bind as {dn} within {LOG_TIMEOUT} s")
        time.sleep(0.05)


def bind_requests(slapd: LdapServer) -> list[str]:
    # slapd logs a request line with "method=" and, on success, a result
    # line with "mech=" for every bind.
    return [line for line in slapd.bind_lines() if " method=" in line]


def user_dn(slapd: LdapServer, uid: str) -> str:
    return next(user.dn for user in slapd.users if user.uid == uid)


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """Listen on a free port of 127.0.0.1 and never reply.

    The kernel completes the TCP handshake for the backlog, so a client
    connects and then waits for a reply that never comes.
    """
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def closed_port() -> int:
    """Return a port of 127.0.0.1 on which nothing listens."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


def test_correct_password_gives_group(slapd: LdapServer) -> None:
    result = login(make_group(slapd), "vpnuser", "vpnpass")
    assert result.success, result.reason
    assert result.group == "staff"


def test_user_without_group_attribute(slapd: LdapServer) -> None:
    result = login(make_group(slapd), "otheruser", "otherpass")
    assert result.success, result.reason
    assert result.group is None


def test_no_group_attribute_configured(slapd: LdapServer) -> None:
    result = login(make_group(slapd, group_attribute=None), "vpnuser", "vpnpass")
    assert result.success, result.reason
    assert result.group is None


def test_group_attribute_in_other_case(slapd: LdapServer) -> None:
    group = make_group(slapd, group_attribute="EMPLOYEETYPE")
    result = login(group, "vpnuser", "vpnpass")
    assert result.group == "staff"


def test_wrong_password(slapd: LdapServer) -> None:
    result = login(make_group(slapd), "vpnuser", "wrong")
    assert not result.success
    assert result.reason == "wrong password"


def test_other_users_password(slapd: LdapServer) -> None:
    result = login(make_group(slapd), "vpnuser", "otherpass")
    assert not result.success
    assert result.reason == "wrong password"


def test_unknown_user(slapd: LdapServer) -> None:
    result = login(make_group(slapd), "nobody", "vpnpass")
    assert not result.success
    assert result.reason == "user not found"


def test_empty_password_sends_no_bind(slapd: LdapServer) -> None:
    group = make_group(slapd)
    before = len(bind_requests(slapd))

    result = login(group, "vpnuser", "")
    assert not result.success
    assert result.reason == "empty password"

    # A later login's bind is the next one in the log, so the empty
    # password caused none.
    assert login(group, "otheruser", "otherpass").success
    lines = wait_for_bind(slapd, user_dn(slapd, "otheruser"), before + 1)
    assert len(lines) == before + 1


def test_empty_password_contacts_no_server() -> None:
    # Nothing listens on the port, so any attempt would fail with
    # "LDAP server unavailable" instead.
    group = LdapAaaGroup(
        "directory", url=f"ldap://{HOST}:{closed_port()}", base_dn=BASE_DN
    )
    result = login(group, "vpnuser", "")
    assert result.reason == "empty password"


@pytest.mark.parametrize("user", ["vpn\x00user", "vpnuser\r\n", "vpn\nuser", ""])
def test_control_characters_rejected(slapd: LdapServer, user: str) -> None:
    result = login(make_group(slapd), user, "vpnpass")
    assert not result.success
    assert result.reason in ("user name contains NUL, CR or LF", "empty user name")


@pytest.mark.parametrize(
    "user",
    ["*", "vpn*", "*user", "vpnuser)(uid=*", "vpnuser)(|(uid=*", "v*r", "\\2a"],
)
def test_filter_injection_does_not_match_vpnuser(slapd: LdapServer, user: str) -> None:
    result = login(make_group(slapd), user, "vpnpass")
    assert not result.success
    assert result.reason in ("user not found", "wrong password")


def test_wildcard_user_name_is_literal(slapd: LdapServer) -> None:
    # Unescaped, (uid=vpn*) would match vpnuser too and be ambiguous.
    result = login(make_group(slapd), "vpn*", "starpass")
    assert result.success, result.reason
    assert result.group == "wildcard"


def test_parentheses_in_user_name(slapd: LdapServer) -> None:
    result = login(make_group(slapd), "ops(admin)", "parenpass")
    assert result.success, result.reason
    assert result.group == "operators"


def test_ambiguous_user_name(slapd: LdapServer) -> None:
    result = login(make_group(slapd), "twin", "twinpass")
    assert not result.success
    assert result.reason == "user name is ambiguous"


def test_custom_user_filter(slapd: LdapServer) -> None:
    group = make_group(slapd, user_filter="(&(objectClass=inetOrgPerson)(cn={user}))")
    result = login(group, "vpnuser", "vpnpass")
    assert result.success, result.reason
    assert result.group == "staff"


def test_search_as_service_account(slapd: LdapServer) -> None:
    group = make_group(slapd, bind_dn=SERVICE_DN, bind_password=SERVICE_PASSWORD)
    before = len(bind_requests(slapd))

    result = login(group, "vpnuser", "vpnpass")
    assert result.success, result.reason
    assert result.group == "staff"

    lines = wait_for_bind(slapd, user_dn(slapd, "vpnuser"), before + 2)
    assert f'dn="{SERVICE_DN}"' in lines[before]


def test_wrong_service_password(
    slapd: LdapServer, caplog: pytest.LogCaptureFixture
) -> None:
    group = make_group(slapd, bind_dn=SERVICE_DN, bind_password="not-the-password")
    with caplog.at_level(logging.WARNING):
        result = login(group, "vpnuser", "vpnpass")
    assert not result.success
    assert result.reason == "LDAP service account bind failed"
    assert "not-the-password" not in caplog.text
    assert "vpnpass" not in caplog.text


def test_missing_base_dn(slapd: LdapServer) -> None:
    result = login(make_group(slapd, base_dn="dc=missing,dc=org"), "vpnuser", "vpnpass")
    assert not result.success
    assert result.reason == "LDAP base_dn not found"


def test_start_tls(slapd: LdapServer) -> None:
    group = make_group(slapd, start_tls=True, ca_file=slapd.ca_file)
    result = login(group, "vpnuser", "vpnpass")
    assert result.success, result.reason
    assert result.group == "staff"


def test_ldaps(slapd: LdapServer) -> None:
    group = make_group(slapd, url=slapd.ldaps_url, ca_file=slapd.ca_file)
    result = login(group, "vpnuser", "vpnpass")
    assert result.success, result.reason


def test_ldaps_untrusted_certificate(slapd: LdapServer) -> None:
    # Without ca_file, libldap checks the self-signed certificate against
    # the system's CA list, which does not contain it.
    result = login(make_group(slapd, url=slapd.ldaps_url), "vpnuser", "vpnpass")
    assert not result.success
    assert result.reason == (
        "LDAP server unavailable: Can't contact LDAP server"
        " (or the TLS certificate check failed: see ca_file)"
    )


def test_start_tls_untrusted_certificate(slapd: LdapServer) -> None:
    result = login(make_group(slapd, start_tls=True), "vpnuser", "vpnpass")
    assert not result.success
    assert result.reason == (
        "LDAP StartTLS failed: Connect error"
        " (or the TLS certificate check failed: see ca_file)"
    )


def test_start_tls_wrong_host_name(slapd: LdapServer) -> None:
    # The certificate names 127.0.0.1 only, so "localhost" does not match it
    # although the CA is trusted.
    url = f"ldap://localhost:{slapd.port}"
    group = make_group(slapd, url=url, start_tls=True, ca_file=slapd.ca_file)
    result = login(group, "vpnuser", "vpnpass")
    assert not result.success
    assert result.reason == (
        "LDAP StartTLS failed: Connect error"
        " (or the TLS certificate check failed: see ca_file)"
    )


def test_server_unavailable() -> None:
    group = LdapAaaGroup(
        "directory", url=f"ldap://{HOST}:{closed_port()}", base_dn=BASE_DN
    )
    result = login(group, "vpnuser", "vpnpass")
    assert not result.success
    assert result.reason.startswith("LDAP server unavailable")


def test_silent_server_times_out() -> None:
    with silent_server() as port:
        group = LdapAaaGroup(
            "directory", url=f"ldap://{HOST}:{port}", base_dn=BASE_DN, timeout=0.5
        )
        started = time.monotonic()
        result = login(group, "vpnuser", "vpnpass")
        elapsed = time.monotonic() - started
    assert not result.success
    assert result.reason == "LDAP server timed out after 0.5 s"
    assert elapsed < 2.0


def test_password_not_in_logs(
    slapd: LdapServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        login(make_group(slapd), "vpnuser", "secret-guess-1")
        login(make_group(slapd), "vpnuser", "vpnpass")
    assert "secret-guess-1" not in caplog.text
    assert "vpnpass" not in caplog.text


def test_concurrent_logins(slapd: LdapServer) -> None:
    group = make_group(slapd)

    async def run() -> list[AaaResult]:
        logins = [group.authenticate("vpnuser", "vpnpass") for _ in range(10)]
        logins += [group.authenticate("vpnuser", "wrong") for _ in range(5)]
        return await asyncio.gather(*logins)

    results = asyncio.run(run())
    assert [result.success for result in results] == [True] * 10 + [False] * 5

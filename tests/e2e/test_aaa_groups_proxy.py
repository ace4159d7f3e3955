"""LDAP and RADIUS server groups checking the VPN part of real logins."""

from __future__ import annotations

import imaplib
import logging
from typing import Any

import pytest

from .dovecot import DovecotServer
from .ldapserver import BASE_DN, LdapServer
from .proxyfixtures import StartProxy
from .radiusserver import RadiusServer

pytestmark = pytest.mark.e2e


def ldap_group(slapd: LdapServer) -> dict[str, Any]:
    return {
        "type": "ldap",
        "url": f"ldap://{slapd.host}:{slapd.port}",
        "base_dn": BASE_DN,
        "group_attribute": "employeeType",
    }


def radius_group(freeradius: RadiusServer) -> dict[str, Any]:
    return {
        "type": "radius",
        "host": freeradius.host,
        "port": freeradius.port,
        "secret": freeradius.secret,
        "timeout": 3,
    }


def use_group(group: dict[str, Any], **imap4s: Any) -> dict[str, Any]:
    staff = {"servers": ["mail"], "protocols": ["imap4s"]}
    return {
        "aaa": {"DIRECTORY": group},
        "group_policy": {"staff": staff},
        "imap4s": {"authentication_server_group": "DIRECTORY", **imap4s},
    }


def login_reply(client: imaplib.IMAP4_SSL, user: str, password: str) -> str:
    try:
        _, data = client.login(user, password)
    except imaplib.IMAP4.error as error:
        return f"NO {error}"
    return f"OK {data[0].decode()}"


@pytest.fixture(params=["ldap", "radius"])
def group(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "ldap":
        return ldap_group(request.getfixturevalue("slapd"))
    return radius_group(request.getfixturevalue("freeradius"))


def test_group_login_fetches_mail(
    start_proxy: StartProxy, dovecot: DovecotServer, group: dict[str, Any]
) -> None:
    proxy = start_proxy(use_group(group))
    with proxy.imap() as client:
        assert login_reply(client, "vpnuser:mailuser", "vpnpass:mailpass").startswith(
            "OK"
        )
        client.select("INBOX", readonly=True)
        _, data = client.fetch("1", "(BODY.PEEK[])")
        assert data[0][1] == dovecot.messages[0]


def test_group_rejects_wrong_vpn_password(
    start_proxy: StartProxy, group: dict[str, Any]
) -> None:
    proxy = start_proxy(use_group(group))
    with proxy.imap() as client:
        reply = login_reply(client, "vpnuser:mailuser", "wrong:mailpass")
    assert reply == "NO b'[AUTHENTICATIONFAILED] Authentication failed'"


def test_group_policy_from_server_refuses_login(
    start_proxy: StartProxy, group: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailproxy_core")
    # Both servers return the group "staff" for vpnuser; its policy does not
    # allow the POP3S listener, so a login there is refused.
    document = use_group(group)
    document["group_policy"]["staff"]["protocols"] = ["pop3s"]
    proxy = start_proxy(document)
    with proxy.imap() as client:
        reply = login_reply(client, "vpnuser:mailuser", "vpnpass:mailpass")
    assert reply == "NO b'[AUTHENTICATIONFAILED] Authentication failed'"
    assert "group policy 'staff' does not allow imap4s" in caplog.text


def test_aaa_without_group_fails_and_logs(
    start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailproxy_core")
    proxy = start_proxy({"imap4s": {"authentication_server_group": None}})
    with proxy.imap() as client:
        reply = login_reply(client, "vpnuser:mailuser", "vpnpass:mailpass")
    assert reply == "NO b'[AUTHENTICATIONFAILED] Authentication failed'"
    assert "no AAA server group configured" in caplog.text
    assert "no authentication_server_group is set" in caplog.text

"""End-to-end tests of upstream connections over implicit TLS and STARTTLS."""

from __future__ import annotations

import imaplib
from typing import Any

import pytest

from .dovecot import DovecotServer
from .proxyfixtures import (
    MAIL_USER,
    VPN_PASSWORD,
    VPN_USER,
    StartProxy,
)
from .tlsupstream import tls_front

pytestmark = pytest.mark.e2e


def server_changes(port: int, **server: Any) -> dict[str, Any]:
    """Return configuration changes that point server ``mail`` at ``port``."""
    return {
        "imap4s": {"servers": {"mail": {"host": "127.0.0.1", "port": port, **server}}}
    }


def try_login(
    start_proxy: StartProxy, dovecot: DovecotServer, changes: dict[str, Any]
) -> bytes:
    """Log in through a proxy with ``changes`` and return message 1."""
    proxy = start_proxy(changes)
    with proxy.imap() as imap:
        imap.login(
            f"{VPN_USER}:{MAIL_USER}", f"{VPN_PASSWORD}:{dovecot.users[MAIL_USER]}"
        )
        imap.select("INBOX", readonly=True)
        status, data = imap.fetch("1", "(BODY.PEEK[])")
        assert status == "OK"
        item = data[0]
        assert isinstance(item, tuple)
        body: bytes = item[1]
        return body


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_verified_upstream_tls(
    start_proxy: StartProxy, dovecot: DovecotServer, mode: str
) -> None:
    with tls_front(dovecot, mode) as front:
        changes = server_changes(
            front.port, tls=mode, verify=True, ca_file=str(front.ca_file)
        )
        assert try_login(start_proxy, dovecot, changes) == dovecot.messages[0]


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_unverified_upstream_tls(
    start_proxy: StartProxy, dovecot: DovecotServer, mode: str
) -> None:
    with tls_front(dovecot, mode) as front:
        changes = server_changes(front.port, tls=mode, verify=False)
        assert try_login(start_proxy, dovecot, changes) == dovecot.messages[0]


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_untrusted_upstream_certificate_fails(
    start_proxy: StartProxy,
    dovecot: DovecotServer,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with tls_front(dovecot, mode) as front:
        changes = server_changes(front.port, tls=mode, verify=True)
        with pytest.raises(imaplib.IMAP4.error):
            try_login(start_proxy, dovecot, changes)
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text

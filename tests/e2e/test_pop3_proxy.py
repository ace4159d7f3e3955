"""End-to-end test of the POP3S listener in front of Dovecot's POP3."""

from __future__ import annotations

import poplib

import pytest

from .dovecot import DovecotServer
from .proxyfixtures import (
    CLIENT_TIMEOUT,
    MAIL_USER,
    VPN_PASSWORD,
    VPN_USER,
    StartProxy,
)

pytestmark = pytest.mark.e2e


def test_pop3s_login_and_retr(start_proxy: StartProxy, dovecot: DovecotServer) -> None:
    pop3s = {
        "listen": "127.0.0.1:0",
        "authentication": ["aaa", "mailhost"],
        "authentication_server_group": "LOCAL",
        "default_server": "mail",
        "servers": {"mail": {"host": dovecot.host, "port": dovecot.pop3_port}},
    }
    proxy = start_proxy({"pop3s": pop3s})
    pop = poplib.POP3_SSL(
        proxy.host,
        proxy.port_of("pop3s"),
        context=proxy.client_context(),
        timeout=CLIENT_TIMEOUT,
    )
    try:
        pop.user(f"{VPN_USER}:{MAIL_USER}")
        pop.pass_(f"{VPN_PASSWORD}:{dovecot.users[MAIL_USER]}")
        count, _size = pop.stat()
        assert count == len(dovecot.messages)
        _response, lines, _octets = pop.retr(1)
        assert b"\r\n".join(lines) + b"\r\n" == dovecot.messages[0]
    finally:
        pop.quit()

"""End-to-end tests of the IMAP4S proxy in front of a real Dovecot."""

from __future__ import annotations

import asyncio.trsock
import imaplib
import json
import logging
import socket
import time

import pytest

from mailproxy_core.states import ConnectionState

from .dovecot import DovecotServer
from .proxyfixtures import (
    MAIL_USER,
    VPN_PASSWORD,
    VPN_USER,
    RunningProxy,
    StartProxy,
)

pytestmark = pytest.mark.e2e

#: Seconds within which a short configured timeout must have fired.
TIMEOUT_SLACK = 5.0


def fetch_body(imap: imaplib.IMAP4, number: int) -> bytes:
    """Fetch one message with ``BODY.PEEK[]`` and return its bytes."""
    status, data = imap.fetch(str(number), "(BODY.PEEK[])")
    assert status == "OK"
    item = data[0]
    assert isinstance(item, tuple)
    body = item[1]
    assert isinstance(body, bytes)
    return body


def combined(dovecot: DovecotServer, server: str = "") -> tuple[str, str]:
    """Return the combined user name and password for ``mailuser``."""
    user = f"{VPN_USER}:{MAIL_USER}{server}"
    return user, f"{VPN_PASSWORD}:{dovecot.users[MAIL_USER]}"


def login_line(tag: str, user: str, password: str) -> bytes:
    """Return an IMAP LOGIN command with both arguments quoted."""
    return f'{tag} LOGIN "{user}" "{password}"\r\n'.encode()


def free_port() -> int:
    """Return a port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_login_list_select_fetch(
    imap_proxy: RunningProxy, dovecot: DovecotServer
) -> None:
    with imap_proxy.imap() as imap:
        login_status, _ = imap.login(*combined(dovecot))
        assert login_status == "OK"

        list_status, mailboxes = imap.list()
        assert list_status == "OK"
        assert any(b"INBOX" in line for line in mailboxes if isinstance(line, bytes))

        select_status, count = imap.select("INBOX")
        assert select_status == "OK"
        assert count == [str(len(dovecot.messages)).encode()]
        assert fetch_body(imap, 1) == dovecot.messages[0]
        imap.logout()


def test_server_named_after_separator(
    imap_proxy: RunningProxy, dovecot: DovecotServer
) -> None:
    with imap_proxy.imap() as imap:
        status, _ = imap.login(*combined(dovecot, "@mail"))
        assert status == "OK"
        assert fetch_body_after_select(imap) == dovecot.messages[0]


def fetch_body_after_select(imap: imaplib.IMAP4) -> bytes:
    """Select INBOX and return message 1."""
    status, _ = imap.select("INBOX", readonly=True)
    assert status == "OK"
    return fetch_body(imap, 1)


def test_wrong_vpn_password_then_retry(
    imap_proxy: RunningProxy, dovecot: DovecotServer
) -> None:
    user, password = combined(dovecot)
    with imap_proxy.tls_client() as client:
        client.read_until(b"\r\n")
        client.send(login_line("a1", user, "wrong:" + dovecot.users[MAIL_USER]))
        assert client.read_until(b"\r\n").startswith(b"a1 NO")

        client.send(login_line("a2", user, password))
        reply = client.read_until(b"a2 ")
        reply += client.read_until(b"\r\n")
        assert b"a2 OK" in reply


def test_wrong_mail_password_rejected(
    imap_proxy: RunningProxy, dovecot: DovecotServer
) -> None:
    with imap_proxy.imap() as imap, pytest.raises(imaplib.IMAP4.error):
        imap.login(f"{VPN_USER}:{MAIL_USER}", f"{VPN_PASSWORD}:wrong")


def test_third_failure_closes(imap_proxy: RunningProxy) -> None:
    with imap_proxy.tls_client() as client:
        client.read_until(b"\r\n")
        for attempt in range(3):
            client.send(login_line(f"a{attempt}", "vpnuser:mailuser", "bad:bad"))
            assert client.read_until(b"\r\n").startswith(f"a{attempt} NO".encode())
        rest = client.read_to_end()
        assert rest.startswith(b"* BYE")


def test_pipelined_select_after_login(
    imap_proxy: RunningProxy, dovecot: DovecotServer
) -> None:
    user, password = combined(dovecot)
    with imap_proxy.tls_client() as client:
        client.read_until(b"\r\n")
        client.send(login_line("a", user, password) + b"b SELECT INBOX\r\nc LOGOUT\r\n")
        transcript = client.read_to_end()
        assert b"a OK" in transcript
        assert b"b OK" in transcript
        assert b"c OK" in transcript


def test_logs_never_show_passwords(
    imap_proxy: RunningProxy, dovecot: DovecotServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mailproxy_core")
    with imap_proxy.imap() as imap:
        imap.login(*combined(dovecot))
        imap.logout()
    with imap_proxy.imap() as imap, pytest.raises(imaplib.IMAP4.error):
        imap.login(f"{VPN_USER}:{MAIL_USER}", "secretvpn:secretmail")

    wait_for(lambda: imap_proxy.call(lambda: not imap_proxy.listener.connections))
    assert "login as 'vpnuser:mailuser'" in caplog.text
    for secret in (VPN_PASSWORD, dovecot.users[MAIL_USER], "secretvpn", "secretmail"):
        assert secret not in caplog.text


def wait_for(condition: object, timeout: float = TIMEOUT_SLACK) -> None:
    """Poll ``condition`` until it returns true.

    :raises AssertionError: when it is still false after ``timeout`` seconds.
    """
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition still false"
        time.sleep(0.02)


def test_idle_timeout_before_login(start_proxy: StartProxy) -> None:
    proxy = start_proxy({"imap4s": {"timeouts": {"idle_unauthenticated": 0.3}}})
    with proxy.tls_client() as client:
        assert client.read_until(b"\r\n").startswith(b"* OK")
        started = time.monotonic()
        rest = client.read_to_end()
        assert rest == b"* BYE Autologout; idle for too long\r\n"
        assert time.monotonic() - started < TIMEOUT_SLACK


def test_handshake_timeout_closes(start_proxy: StartProxy) -> None:
    proxy = start_proxy({"imap4s": {"timeouts": {"handshake": 0.3}}})
    with proxy.tcp_client() as client:
        started = time.monotonic()
        assert client.read_to_end() == b""
        assert time.monotonic() - started < TIMEOUT_SLACK


def test_slow_handshake_counts_toward_limit(start_proxy: StartProxy) -> None:
    proxy = start_proxy({"imap4s": {"outstanding": 1}})
    with proxy.tcp_client() as silent:
        wait_for(lambda: proxy.call(lambda: proxy.listener.limit.counted == 1))
        with proxy.tls_client() as client:
            assert client.read_until(b"\r\n").startswith(b"* OK")
            assert silent.read_to_end() == b""


def test_limit_evicts_oldest_unauthenticated(start_proxy: StartProxy) -> None:
    proxy = start_proxy({"imap4s": {"outstanding": 2}})
    with proxy.tls_client() as first, proxy.tls_client() as second:
        first.read_until(b"\r\n")
        second.read_until(b"\r\n")
        with proxy.tls_client() as third:
            third.read_until(b"\r\n")
            assert first.read_to_end().startswith(b"* BYE")

            second.send(b"n NOOP\r\n")
            assert second.read_until(b"\r\n").startswith(b"n OK")
            third.send(b"n NOOP\r\n")
            assert third.read_until(b"\r\n").startswith(b"n OK")


def test_limit_spares_authenticated(
    start_proxy: StartProxy, dovecot: DovecotServer
) -> None:
    proxy = start_proxy({"imap4s": {"outstanding": 1}})
    with proxy.imap() as imap:
        imap.login(*combined(dovecot))
        with proxy.tls_client() as other, proxy.tls_client() as newest:
            newest.read_until(b"\r\n")
            assert other.read_to_end().startswith(b"* OK")
        assert imap.noop()[0] == "OK"


def test_upstream_unreachable_fails_login(
    start_proxy: StartProxy, dovecot: DovecotServer
) -> None:
    port = free_port()
    servers = {"down": {"host": "127.0.0.1", "port": port}}
    proxy = start_proxy({"imap4s": {"servers": servers}})
    with proxy.tls_client() as client:
        client.read_until(b"\r\n")
        user, password = combined(dovecot, "@down")
        client.send(login_line("a", user, password))
        assert client.read_until(b"\r\n").startswith(b"a NO")

        client.send(login_line("b", *combined(dovecot)))
        assert b"b OK" in client.read_until(b"b ") + client.read_until(b"\r\n")


def test_upstream_login_timeout(
    start_proxy: StartProxy, dovecot: DovecotServer
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent_server:
        port = silent_server.getsockname()[1]
        servers = {"silent": {"host": "127.0.0.1", "port": port}}
        changes = {"servers": servers, "timeouts": {"upstream": 0.3}}
        proxy = start_proxy({"imap4s": changes})
        with proxy.tls_client() as client:
            client.read_until(b"\r\n")
            started = time.monotonic()
            client.send(login_line("a", *combined(dovecot, "@silent")))
            assert client.read_until(b"\r\n").startswith(b"a NO")
            assert time.monotonic() - started < TIMEOUT_SLACK
            wait_for(
                lambda: proxy.call(
                    lambda: all(
                        c.state is ConnectionState.UNAUTHENTICATED
                        for c in proxy.listener.connections.values()
                    )
                )
            )


def test_starttls_listener(start_proxy: StartProxy, dovecot: DovecotServer) -> None:
    proxy = start_proxy({"imap4s": {"starttls": "required"}})
    with imaplib.IMAP4(proxy.host, proxy.port, timeout=10) as imap:
        assert "LOGINDISABLED" in imap.capabilities
        imap.starttls(proxy.client_context())
        status, _ = imap.login(*combined(dovecot))
        assert status == "OK"
        assert fetch_body_after_select(imap) == dovecot.messages[0]


def test_accepted_socket_has_nodelay(imap_proxy: RunningProxy) -> None:
    with imap_proxy.tls_client() as client:
        client.read_until(b"\r\n")

        def nodelay_flags() -> list[int]:
            flags = []
            for connection in imap_proxy.listener.connections.values():
                sock = connection.client.extra("socket")
                assert isinstance(sock, socket.socket | asyncio.trsock.TransportSocket)
                flags.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            return flags

        assert imap_proxy.call(nodelay_flags) == [1]


def test_accounting_record_written(
    start_proxy: StartProxy, dovecot: DovecotServer, tmp_path: object
) -> None:
    proxy = start_proxy({"accounting_file": "accounting.jsonl"})
    path = proxy.config.accounting_file
    assert path is not None
    with proxy.imap() as imap:
        imap.login(*combined(dovecot))
        imap.logout()
    wait_for(lambda: path.exists() and path.read_text().strip() != "")

    record = json.loads(path.read_text().splitlines()[-1])
    assert record["vpn_user"] == VPN_USER
    assert record["mail_user"] == MAIL_USER
    assert record["upstream"] == "mail"
    assert record["authenticated"] is True
    assert record["bytes_from_client"] > 0
    assert record["bytes_to_client"] > 0

"""The client's address reaches Dovecot (IMAP ID) and Postfix (XCLIENT).

Every test client connects from 127.0.0.1, so each test plays a load
balancer that sends a PROXY header for 192.0.2.55, a documentation address
that nothing connects to. With ``forward_client_address`` the proxy passes
that address on, and the server's log names it as the client.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from .dovecot import DovecotServer
from .postfix import DOMAIN, PostfixServer
from .proxyfixtures import (
    CLIENT_TIMEOUT,
    MAIL_USER,
    VPN_PASSWORD,
    VPN_USER,
    RawClient,
    RunningProxy,
    StartProxy,
)

pytestmark = pytest.mark.e2e

CLIENT = "192.0.2.55"
HEADER = f"PROXY TCP4 {CLIENT} 198.51.100.1 40555 993\r\n".encode()

#: Seconds that a server may take to write a log line after a login.
LOG_TIMEOUT = 5.0

#: Lines that a test reads at most while it waits for a final reply.
MAX_REPLY_LINES = 50


def connect_tls(proxy: RunningProxy, port: int) -> RawClient:
    """Send the PROXY header over TCP, then start TLS on the same socket."""
    sock = socket.create_connection((proxy.host, port), CLIENT_TIMEOUT)
    try:
        sock.sendall(HEADER)
        wrapped = proxy.client_context().wrap_socket(sock, server_hostname=proxy.host)
    except BaseException:
        sock.close()
        raise
    return RawClient(wrapped)


def wait_for_log(read_log: Callable[[], str], start: int, text: str) -> str:
    """Return the log written after offset ``start`` once it contains ``text``."""
    deadline = time.monotonic() + LOG_TIMEOUT
    while True:
        written = read_log()[start:]
        if text in written or time.monotonic() > deadline:
            return written
        time.sleep(0.05)


def imap_listener(dovecot: DovecotServer, forward: bool) -> dict[str, Any]:
    server = {"host": dovecot.host, "port": dovecot.imap_port}
    return {
        "imap4s": {
            "proxy_protocol": ["127.0.0.1"],
            "servers": {"mail": {**server, "forward_client_address": forward}},
        }
    }


def imap_reply(client: RawClient, tag: bytes) -> list[bytes]:
    """Read lines up to and with the one that starts with ``tag``."""
    lines: list[bytes] = []
    for _ in range(MAX_REPLY_LINES):
        lines.append(client.read_until(b"\r\n"))
        if lines[-1].startswith(tag):
            return lines
    raise AssertionError(f"no {tag!r} reply in {MAX_REPLY_LINES} lines")


def imap_login(proxy: RunningProxy, dovecot: DovecotServer) -> None:
    """Log in through the proxy with the combined credentials, then log out."""
    user = f"{VPN_USER}:{MAIL_USER}"
    password = f"{VPN_PASSWORD}:{dovecot.users[MAIL_USER]}"
    with connect_tls(proxy, proxy.port) as client:
        assert client.read_until(b"\r\n").startswith(b"* OK")
        client.send(f'a LOGIN "{user}" "{password}"\r\n'.encode())
        lines = imap_reply(client, b"a ")
        assert lines[-1].startswith(b"a OK"), lines
        assert not any(line.startswith(b"* ID") for line in lines)
        client.send(b"b LOGOUT\r\n")
        assert b"b OK" in client.read_until(b"b OK")


def test_imap_id_sets_dovecot_rip(
    start_proxy: StartProxy, dovecot: DovecotServer
) -> None:
    proxy = start_proxy(imap_listener(dovecot, forward=True))
    start = len(dovecot.read_log())
    imap_login(proxy, dovecot)

    written = wait_for_log(dovecot.read_log, start, f"rip={CLIENT},")
    assert f"user=<{MAIL_USER}>" in written
    assert f"rip={CLIENT}," in written


def test_imap_without_forwarding_keeps_proxy_rip(
    start_proxy: StartProxy, dovecot: DovecotServer
) -> None:
    proxy = start_proxy(imap_listener(dovecot, forward=False))
    start = len(dovecot.read_log())
    imap_login(proxy, dovecot)

    written = wait_for_log(dovecot.read_log, start, "rip=127.0.0.1,")
    assert "rip=127.0.0.1," in written
    assert f"rip={CLIENT}" not in written


def smtp_reply(client: RawClient) -> bytes:
    """Read one SMTP reply, all its lines, and return its last line."""
    for _ in range(MAX_REPLY_LINES):
        line = client.read_until(b"\r\n")
        if line[3:4] != b"-":
            return line
    raise AssertionError(f"no final reply line in {MAX_REPLY_LINES} lines")


def test_smtp_xclient_sets_postfix_client(
    start_proxy: StartProxy, dovecot: DovecotServer, postfix: PostfixServer
) -> None:
    server = {"host": postfix.host, "port": postfix.submission_port}
    smtps = {
        "listen": "127.0.0.1:0",
        "authentication": ["aaa", "mailhost"],
        "authentication_server_group": "LOCAL",
        "default_server": "submission",
        "proxy_protocol": ["127.0.0.1"],
        "servers": {"submission": {**server, "forward_client_address": True}},
    }
    proxy = start_proxy({"smtps": smtps})
    start = len(postfix.read_log())
    user = f"{VPN_USER}:{MAIL_USER}"
    password = f"{VPN_PASSWORD}:{dovecot.users[MAIL_USER]}"
    plain = base64.b64encode(f"\0{user}\0{password}".encode())
    sender = f"{MAIL_USER}@{DOMAIN}"

    with connect_tls(proxy, proxy.port_of("smtps")) as client:
        assert smtp_reply(client).startswith(b"220")
        client.send(b"EHLO client.example\r\n")
        assert smtp_reply(client).startswith(b"250")
        client.send(b"AUTH PLAIN " + plain + b"\r\n")
        assert smtp_reply(client).startswith(b"235")
        # Postfix logs the client with the queue ID once a recipient passes.
        client.send(f"MAIL FROM:<{sender}>\r\n".encode())
        assert smtp_reply(client).startswith(b"250")
        client.send(f"RCPT TO:<{sender}>\r\n".encode())
        assert smtp_reply(client).startswith(b"250")
        client.send(b"RSET\r\nQUIT\r\n")
        assert smtp_reply(client).startswith(b"250")
        assert smtp_reply(client).startswith(b"221")

    written = wait_for_log(postfix.read_log, start, f"[{CLIENT}]")
    lines = [line for line in written.splitlines() if "client=" in line]
    assert any(f"[{CLIENT}]" in line for line in lines), written

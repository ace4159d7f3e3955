"""The PROXY protocol header of a trusted load balancer, before IMAP4S TLS.

The test client plays the load balancer: from 127.0.0.1 it sends the
header, then runs the TLS handshake and IMAP on the same socket. The
client addresses in the headers (192.0.2.0/24, 2001:db8::/32) are
documentation addresses that nothing ever connects to.
"""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from mailproxy_core.proxy.piggyback import create_database

from .dovecot import DovecotServer
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

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

V1_HEADER = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 993\r\n"

#: Seconds that the proxy may take to close and log a finished connection.
CLOSE_TIMEOUT = 5.0

#: Lines that a test reads at most while it waits for a tagged reply.
MAX_REPLY_LINES = 50


def v2_header(command: int, family: int, block: bytes) -> bytes:
    """Build a version 2 header from its command, family byte and block."""
    return (
        V2_SIGNATURE + struct.pack("!BBH", 0x20 | command, family, len(block)) + block
    )


def v2_tcp6_header() -> bytes:
    """Return a version 2 PROXY header for 2001:db8::7 port 40000, with TLVs."""
    source = socket.inet_pton(socket.AF_INET6, "2001:db8::7")
    destination = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    ports = struct.pack("!HH", 40000, 993)
    alpn = struct.pack("!BH", 0x01, 4) + b"imap"
    unique_id = struct.pack("!BH", 0x05, 8) + b"lb-00001"
    return v2_header(1, 0x21, source + destination + ports + alpn + unique_id)


def trusting(**keys: Any) -> dict[str, Any]:
    """Return changes for a listener that trusts 127.0.0.1 as load balancer."""
    return {
        "accounting_file": "accounting.jsonl",
        "imap4s": {"proxy_protocol": ["10.0.0.0/8", "127.0.0.1"], **keys},
    }


def connect_tls(proxy: RunningProxy, header: bytes) -> RawClient:
    """Send ``header`` over TCP, then start TLS on the same socket."""
    sock = socket.create_connection((proxy.host, proxy.port), CLIENT_TIMEOUT)
    try:
        sock.sendall(header)
        wrapped = proxy.client_context().wrap_socket(sock, server_hostname=proxy.host)
    except BaseException:
        sock.close()
        raise
    return RawClient(wrapped)


def command(client: RawClient, tag: str, text: str) -> bytes:
    """Send one IMAP command and return its tagged reply line."""
    client.send(f"{tag} {text}\r\n".encode())
    for _ in range(MAX_REPLY_LINES):
        line = client.read_until(b"\r\n")
        if line.startswith(f"{tag} ".encode()):
            return line
    raise AssertionError(f"no tagged reply to {text!r} in {MAX_REPLY_LINES} lines")


def log_in_and_select(client: RawClient, dovecot: DovecotServer) -> None:
    """Log in with the combined credentials, select INBOX and log out."""
    assert client.read_until(b"\r\n").startswith(b"* OK")
    user = f"{VPN_USER}:{MAIL_USER}"
    password = f"{VPN_PASSWORD}:{dovecot.users[MAIL_USER]}"
    assert command(client, "a", f'LOGIN "{user}" "{password}"').startswith(b"a OK")
    assert command(client, "b", "SELECT INBOX").startswith(b"b OK")
    assert command(client, "c", "LOGOUT").startswith(b"c OK")


def last_record(proxy: RunningProxy) -> dict[str, Any]:
    """Wait until every connection is closed, then return the last record."""
    deadline = time.monotonic() + CLOSE_TIMEOUT
    while proxy.call(lambda: bool(proxy.listener.connections)):
        assert time.monotonic() < deadline, "a proxy connection is still open"
        time.sleep(0.02)
    path = proxy.config.accounting_file
    assert path is not None
    record: dict[str, Any] = json.loads(path.read_text().splitlines()[-1])
    return record


def test_v1_header_sets_client_address(
    start_proxy: StartProxy, dovecot: DovecotServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailproxy_core")
    proxy = start_proxy(trusting())
    with connect_tls(proxy, V1_HEADER) as client:
        log_in_and_select(client, dovecot)

    record = last_record(proxy)
    assert record["client"] == "192.0.2.7:40000"
    assert record["authenticated"] is True
    assert "client 192.0.2.7:40000 through load balancer 127.0.0.1:" in caplog.text
    assert "(PROXY header v1)" in caplog.text


def test_v2_header_sets_client_address(
    start_proxy: StartProxy, dovecot: DovecotServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailproxy_core")
    proxy = start_proxy(trusting())
    with connect_tls(proxy, v2_tcp6_header()) as client:
        log_in_and_select(client, dovecot)

    record = last_record(proxy)
    assert record["client"] == "[2001:db8::7]:40000"
    assert record["authenticated"] is True
    expected = "client [2001:db8::7]:40000 through load balancer 127.0.0.1:"
    assert expected in caplog.text
    assert "(PROXY header v2)" in caplog.text


def test_v2_local_keeps_peer_address(
    start_proxy: StartProxy, dovecot: DovecotServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A health check of the load balancer: LOCAL, with no address block.
    caplog.set_level(logging.INFO, logger="mailproxy_core")
    proxy = start_proxy(trusting())
    with connect_tls(proxy, v2_header(0, 0x00, b"")) as client:
        log_in_and_select(client, dovecot)

    record = last_record(proxy)
    assert record["client"].startswith("127.0.0.1:")
    assert record["authenticated"] is True
    assert "PROXY header v2 LOCAL carries no client address" in caplog.text


def test_header_address_used_by_piggyback(
    start_proxy: StartProxy, dovecot: DovecotServer, tmp_path: Path
) -> None:
    database = tmp_path / "web-sessions.db"
    create_database(database)
    with sqlite3.connect(database) as connection:
        connection.execute(
            "INSERT INTO web_sessions VALUES (?, ?, ?)",
            ("web", "192.0.2.7", int(time.time()) + 60),
        )
    connection.close()
    changes = trusting(authentication=["piggyback", "mailhost"])
    changes["piggyback"] = {"database": str(database), "timeout": 2}
    proxy = start_proxy(changes)
    login = f'LOGIN "{MAIL_USER}" "{dovecot.users[MAIL_USER]}"'

    with connect_tls(proxy, V1_HEADER) as client:
        assert client.read_until(b"\r\n").startswith(b"* OK")
        assert command(client, "a", login).startswith(b"a OK")
    assert last_record(proxy)["methods"] == ["piggyback", "mailhost"]

    # The web session belongs to 192.0.2.7, not to the load balancer's
    # address or to any other client behind it.
    other = V1_HEADER.replace(b"192.0.2.7", b"192.0.2.8")
    with connect_tls(proxy, other) as client:
        assert client.read_until(b"\r\n").startswith(b"* OK")
        assert command(client, "a", login).startswith(b"a NO")
    assert last_record(proxy)["client"] == "192.0.2.8:40000"


def test_header_before_starttls_listener(
    start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailproxy_core")
    proxy = start_proxy(trusting(starttls="required"))
    with proxy.tcp_client() as client:
        client.send(V1_HEADER)
        assert client.read_until(b"\r\n").startswith(b"* OK")
        assert command(client, "a", "LOGOUT").startswith(b"a OK")

    assert last_record(proxy)["client"] == "192.0.2.7:40000"


MALFORMED_HEADERS = {
    "bad IPv4 address": (
        b"PROXY TCP4 192.0.2.300 198.51.100.1 40000 993\r\n",
        "version 1 IPv4 address '192.0.2.300' is invalid",
    ),
    "port with leading zero": (
        b"PROXY TCP4 192.0.2.7 198.51.100.1 040000 993\r\n",
        "version 1 port '040000' is invalid",
    ),
    "v2 TLV overrun": (
        v2_header(1, 0x11, bytes(12) + b"\x01\x00\x09abc"),
        "version 2 TLV of type 0x01 at byte 28 has a length of 9, but only 3 bytes "
        "follow",
    ),
    "plain IMAP": (b"a1 CAPABILITY\r\n", "no PROXY protocol signature"),
}


@pytest.mark.parametrize(
    ("header", "reason"), MALFORMED_HEADERS.values(), ids=MALFORMED_HEADERS.keys()
)
def test_malformed_header_closes_without_greeting(
    start_proxy: StartProxy,
    header: bytes,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mailproxy_core")
    proxy = start_proxy(trusting())
    with proxy.tcp_client() as client:
        client.send(header)
        assert client.read_to_end() == b""

    record = last_record(proxy)
    assert record["end_reason"].startswith("invalid PROXY header: ")
    assert reason in record["end_reason"]
    assert record["client"].startswith("127.0.0.1:")
    assert f"invalid PROXY header: {reason}" in caplog.text


def test_silent_trusted_peer_times_out(
    start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailproxy_core")
    proxy = start_proxy(trusting(timeouts={"handshake": 0.5}))
    started = time.monotonic()
    with proxy.tcp_client() as client:
        assert client.read_to_end() == b""
    assert time.monotonic() - started < CLOSE_TIMEOUT

    record = last_record(proxy)
    assert record["end_reason"] == "no complete PROXY header within 0.5 s"
    assert "no complete PROXY header within 0.5 s; closing" in caplog.text


def test_partial_header_times_out(start_proxy: StartProxy) -> None:
    proxy = start_proxy(trusting(timeouts={"handshake": 0.5}))
    with proxy.tcp_client() as client:
        client.send(V1_HEADER[:20])
        assert client.read_to_end() == b""
    assert last_record(proxy)["end_reason"] == "no complete PROXY header within 0.5 s"


def test_trusted_peer_without_header_fails_tls(
    start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailproxy_core")
    proxy = start_proxy(trusting())
    # The ClientHello is no header, so the proxy closes at its first byte.
    with pytest.raises(OSError):
        connect_tls(proxy, b"")

    record = last_record(proxy)
    assert "starts a TLS handshake" in record["end_reason"]
    assert record["bytes_to_client"] == 0


def test_untrusted_peer_needs_no_header(
    start_proxy: StartProxy, dovecot: DovecotServer
) -> None:
    proxy = start_proxy(trusting(proxy_protocol=["192.0.2.0/24", "::1"]))
    with connect_tls(proxy, b"") as client:
        log_in_and_select(client, dovecot)

    record = last_record(proxy)
    assert record["client"].startswith("127.0.0.1:")
    assert record["authenticated"] is True


def test_untrusted_peer_header_fails_tls(
    start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailproxy_core")
    proxy = start_proxy(trusting(proxy_protocol=["192.0.2.0/24"]))
    # Only a listed load balancer may name a client address.
    with pytest.raises(OSError):
        connect_tls(proxy, V1_HEADER)

    record = last_record(proxy)
    assert record["client"].startswith("127.0.0.1:")
    assert record["end_reason"].startswith("client TLS handshake failed")
    assert "through load balancer" not in caplog.text

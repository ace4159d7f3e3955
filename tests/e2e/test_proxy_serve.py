"""End-to-end tests of ``mailproxy serve`` as a separate process."""

from __future__ import annotations

import imaplib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .dovecot import DovecotServer
from .proxyfixtures import (
    CLIENT_TIMEOUT,
    MAIL_USER,
    VPN_PASSWORD,
    VPN_USER,
    RawClient,
    write_users,
)

pytestmark = pytest.mark.e2e

DRAIN_TIMEOUT = 2.0
START_TIMEOUT = 15.0
EXIT_SLACK = 10.0

CONFIG = """\
drain_timeout = {drain}

[aaa.LOCAL]
type = "local"
users_file = "users.db"

[imap4s]
listen = "127.0.0.1:{port}"
authentication_server_group = "LOCAL"
default_server = "mail"

[imap4s.servers.mail]
host = "{host}"
port = {upstream_port}
"""


@dataclass(kw_only=True)
class ServeProcess:
    """A running ``mailproxy serve`` and where to reach it."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def unverified_context(self) -> ssl.SSLContext:
        """Return a client context that accepts the throwaway certificate."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context

    def tls_client(self) -> RawClient:
        """Open a TLS connection without certificate verification."""
        sock = socket.create_connection(("127.0.0.1", self.port), CLIENT_TIMEOUT)
        return RawClient(self.unverified_context().wrap_socket(sock))

    def imap(self) -> imaplib.IMAP4_SSL:
        """Open an IMAP client without certificate verification."""
        return imaplib.IMAP4_SSL(
            "127.0.0.1",
            self.port,
            ssl_context=self.unverified_context(),
            timeout=CLIENT_TIMEOUT,
        )

    def wait_exit(self) -> int:
        """Wait for the process to end and return its exit status."""
        return self.process.wait(DRAIN_TIMEOUT + EXIT_SLACK)


def free_port() -> int:
    """Return a port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def serve(dovecot: DovecotServer, tmp_path: Path) -> Iterator[ServeProcess]:
    """Run ``python -m mailproxy_core.proxy.cli serve`` in front of Dovecot."""
    port = free_port()
    config = tmp_path / "proxy.toml"
    config.write_text(
        CONFIG.format(
            drain=DRAIN_TIMEOUT,
            port=port,
            host=dovecot.host,
            upstream_port=dovecot.imap_port,
        )
    )
    write_users(tmp_path)
    log = tmp_path / "proxy.log"
    command = [sys.executable, "-m", "mailproxy_core.proxy.cli", "serve"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*command, "--config", str(config)], stdout=output, stderr=output
        )
    running = ServeProcess(process=process, port=port, log=log)
    try:
        wait_listening(running)
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(EXIT_SLACK)


def wait_listening(running: ServeProcess) -> None:
    """Wait until the log says that the proxy listens."""
    deadline = time.monotonic() + START_TIMEOUT
    while "listening on" not in running.log.read_text():
        assert running.process.poll() is None, running.log.read_text()
        assert time.monotonic() < deadline, running.log.read_text()
        time.sleep(0.05)


def login(imap: imaplib.IMAP4, dovecot: DovecotServer) -> None:
    """Log in with the combined credentials of ``mailuser``."""
    password = f"{VPN_PASSWORD}:{dovecot.users[MAIL_USER]}"
    status, _ = imap.login(f"{VPN_USER}:{MAIL_USER}", password)
    assert status == "OK"


def test_sigterm_says_bye_and_drains(
    serve: ServeProcess, dovecot: DovecotServer
) -> None:
    with serve.tls_client() as waiting, serve.imap() as imap:
        waiting.read_until(b"\r\n")
        login(imap, dovecot)
        os.kill(serve.process.pid, signal.SIGTERM)

        assert waiting.read_to_end() == b"* BYE Server shutting down\r\n"
        assert imap.noop()[0] == "OK"
        imap.logout()
    assert serve.wait_exit() == 0
    log = serve.log.read_text()
    assert "proxy stopped" in log
    assert VPN_PASSWORD not in log


def test_sigterm_closes_after_drain_timeout(
    serve: ServeProcess, dovecot: DovecotServer
) -> None:
    # No context manager: its exit would send LOGOUT over the closed socket.
    imap = serve.imap()
    login(imap, dovecot)
    started = time.monotonic()
    os.kill(serve.process.pid, signal.SIGTERM)
    assert serve.wait_exit() == 0
    assert time.monotonic() - started >= DRAIN_TIMEOUT - 0.5
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        imap.noop()
    imap.shutdown()
    assert "drain time" in serve.log.read_text()


def test_new_connections_refused_after_sigterm(
    serve: ServeProcess, dovecot: DovecotServer
) -> None:
    with serve.imap() as imap:
        login(imap, dovecot)
        os.kill(serve.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + EXIT_SLACK
        while True:
            try:
                socket.create_connection(("127.0.0.1", serve.port), 1).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "proxy still accepts"
            time.sleep(0.05)
        imap.logout()
    assert serve.wait_exit() == 0


def test_second_sigterm_ends_drain_at_once(
    serve: ServeProcess, dovecot: DovecotServer
) -> None:
    imap = serve.imap()
    login(imap, dovecot)
    started = time.monotonic()
    os.kill(serve.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + START_TIMEOUT
    while "draining for up to" not in serve.log.read_text():
        assert time.monotonic() < deadline, serve.log.read_text()
        time.sleep(0.05)
    os.kill(serve.process.pid, signal.SIGTERM)
    assert serve.wait_exit() == 0
    assert time.monotonic() - started < DRAIN_TIMEOUT - 0.5
    assert "second stop signal received" in serve.log.read_text()
    imap.shutdown()

"""A silent AAA server delays only its own group's logins."""

from __future__ import annotations

import contextlib
import poplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import pytest

from .dovecot import DovecotServer
from .proxyfixtures import StartProxy

pytestmark = pytest.mark.e2e


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """Accept TCP connections on 127.0.0.1 and never send a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for connection in accepted:
            connection.close()
        listener.close()


def test_silent_ldaps_server_does_not_block_local_logins(
    start_proxy: StartProxy, dovecot: DovecotServer
) -> None:
    with silent_server() as port:
        proxy = start_proxy(
            {
                "aaa": {
                    "HOLE": {
                        "type": "ldap",
                        "url": f"ldaps://127.0.0.1:{port}",
                        "base_dn": "dc=example,dc=org",
                        "timeout": 1,
                    }
                },
                "pop3s": {
                    "listen": "127.0.0.1:0",
                    "authentication_server_group": "HOLE",
                    "servers": {
                        "mail": {"host": dovecot.host, "port": dovecot.pop3_port}
                    },
                    "default_server": "mail",
                },
            }
        )
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        pop3_port = proxy.port_of("pop3s")

        def stuck_login() -> None:
            with contextlib.suppress(poplib.error_proto, OSError):
                client = poplib.POP3_SSL(
                    "127.0.0.1", pop3_port, context=context, timeout=10
                )
                client.user("vpnuser:mailuser")
                client.pass_("vpnpass:mailpass")

        threads = [threading.Thread(target=stuck_login) for _ in range(12)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)

        started = time.monotonic()
        with proxy.imap() as client:
            assert client.login("vpnuser:mailuser", "vpnpass:mailpass")[0] == "OK"
        assert time.monotonic() - started < 3
        for thread in threads:
            thread.join(15)

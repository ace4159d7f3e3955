"""End-to-end tests of method ``piggyback`` on IMAP4S in front of Dovecot.

The web sessions database is a SQLite file in the test's folder, written
the way a web portal would write it, or with ``mailproxy piggyback``.
Every client connects from 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from mailproxy_core.proxy import cli
from mailproxy_core.proxy.piggyback import create_database

from .clientcerts import ClientPki, make_client_pki
from .dovecot import DovecotServer
from .proxyfixtures import (
    CLIENT_TIMEOUT,
    MAIL_USER,
    VPN_USER,
    RawClient,
    RunningProxy,
    StartProxy,
)

pytestmark = pytest.mark.e2e

CLIENT_ADDRESS = "127.0.0.1"
IMAP_FAILURE = b"a NO [AUTHENTICATIONFAILED]"

#: Seconds that the proxy may take to close and log a finished connection.
CLOSE_TIMEOUT = 5.0


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """Return a web sessions database with the table and no rows."""
    path = tmp_path / "web-sessions.db"
    create_database(path)
    return path


def add_row(database: Path, username: str, expires_in: int) -> None:
    """Insert a session of 127.0.0.1 that ends ``expires_in`` seconds from now."""
    with sqlite3.connect(database) as connection:
        connection.execute(
            "INSERT INTO web_sessions VALUES (?, ?, ?)",
            (username, CLIENT_ADDRESS, int(time.time()) + expires_in),
        )
    connection.close()


def piggyback_config(database: Path, *methods: str, **keys: Any) -> dict[str, Any]:
    """Return configuration changes for a listener with ``methods``."""
    chosen = list(methods) or ["piggyback", "mailhost"]
    return {
        "piggyback": {"database": str(database), "timeout": 2},
        "imap4s": {"authentication": chosen, **keys},
        "accounting_file": "accounting.jsonl",
    }


def login_reply(
    proxy: RunningProxy, dovecot: DovecotServer, context: ssl.SSLContext | None = None
) -> bytes:
    """Log in with the mail part only and return the tagged reply line."""
    sock = socket.create_connection((proxy.host, proxy.port), CLIENT_TIMEOUT)
    wrapped = (context or proxy.client_context()).wrap_socket(
        sock, server_hostname=proxy.host
    )
    with RawClient(wrapped) as client:
        assert client.read_until(b"\r\n").startswith(b"* OK")
        password = dovecot.users[MAIL_USER]
        client.send(f'a LOGIN "{MAIL_USER}" "{password}"\r\n'.encode())
        return client.read_until(b"a ") + client.read_until(b"\r\n")


def wait_until_idle(proxy: RunningProxy) -> None:
    """Wait until the proxy has closed and logged every connection.

    :raises AssertionError: when a connection is still open after
        :data:`CLOSE_TIMEOUT`.
    """
    deadline = time.monotonic() + CLOSE_TIMEOUT
    while proxy.call(lambda: bool(proxy.listener.connections)):
        assert time.monotonic() < deadline, "a proxy connection is still open"
        time.sleep(0.02)


def last_record(proxy: RunningProxy) -> dict[str, Any]:
    """Return the last accounting record of ``proxy``."""
    wait_until_idle(proxy)
    path = proxy.config.accounting_file
    assert path is not None
    record: dict[str, Any] = json.loads(path.read_text().splitlines()[-1])
    return record


def test_fresh_session_passes_and_fetches(
    start_proxy: StartProxy, dovecot: DovecotServer, database: Path, tmp_path: Path
) -> None:
    # The row comes from 'mailproxy piggyback add', which reads the path
    # from a configuration file.
    config = tmp_path / "piggyback.toml"
    config.write_text(f'[piggyback]\ndatabase = "{database}"\n')
    arguments = ["--config", str(config), "--address", CLIENT_ADDRESS]
    assert (
        cli.main(["piggyback", "add", *arguments, "--user", "web", "--ttl", "60"]) == 0
    )

    proxy = start_proxy(piggyback_config(database))
    with proxy.imap() as imap:
        status, _ = imap.login(MAIL_USER, dovecot.users[MAIL_USER])
        assert status == "OK"
        assert imap.select("INBOX", readonly=True)[0] == "OK"
        status, data = imap.fetch("1", "(BODY.PEEK[])")
        assert status == "OK"
        item = data[0]
        assert isinstance(item, tuple)
        assert item[1] == dovecot.messages[0]
        imap.logout()

    record = last_record(proxy)
    assert record["methods"] == ["piggyback", "mailhost"]
    assert record["authenticated"] is True


def test_no_session_fails(
    start_proxy: StartProxy,
    dovecot: DovecotServer,
    database: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mailproxy_core")
    proxy = start_proxy(piggyback_config(database))
    assert login_reply(proxy, dovecot).startswith(IMAP_FAILURE)

    record = last_record(proxy)
    assert record["authenticated"] is False
    assert record["methods"] == []
    expected = "authentication failed (piggyback): no live web session of 127.0.0.1"
    assert expected in caplog.text


def test_expired_session_fails(
    start_proxy: StartProxy, dovecot: DovecotServer, database: Path
) -> None:
    add_row(database, "web", expires_in=-1)
    proxy = start_proxy(piggyback_config(database))
    assert login_reply(proxy, dovecot).startswith(IMAP_FAILURE)


def test_missing_database_fails_then_recovers(
    start_proxy: StartProxy,
    dovecot: DovecotServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mailproxy_core")
    database = tmp_path / "not-yet.db"
    proxy = start_proxy(piggyback_config(database))
    assert login_reply(proxy, dovecot).startswith(IMAP_FAILURE)
    wait_until_idle(proxy)
    assert f"cannot read piggyback database {database}" in caplog.text

    create_database(database)
    add_row(database, "web", expires_in=60)
    assert b"a OK" in login_reply(proxy, dovecot)


# With method certificate the row's user name must match the certificate's.


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ClientPki:
    """Return the test CA and client certificates."""
    return make_client_pki(tmp_path_factory.mktemp("client-pki"))


def start_with_certificate(
    start_proxy: StartProxy, database: Path, pki: ClientPki
) -> tuple[RunningProxy, ssl.SSLContext]:
    """Start a certificate, piggyback and mailhost listener and a client context."""
    methods = ("certificate", "piggyback", "mailhost")
    changes = piggyback_config(database, *methods, client_ca=str(pki.ca_file))
    proxy = start_proxy(changes)
    return proxy, pki.full.load_into(proxy.client_context())


def test_session_of_other_user_fails(
    start_proxy: StartProxy,
    dovecot: DovecotServer,
    database: Path,
    pki: ClientPki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mailproxy_core")
    add_row(database, "otheruser", expires_in=60)
    proxy, context = start_with_certificate(start_proxy, database, pki)
    assert login_reply(proxy, dovecot, context).startswith(IMAP_FAILURE)

    record = last_record(proxy)
    assert record["methods"] == ["certificate"]
    expected = f"belong to users other than {VPN_USER!r}"
    assert expected in caplog.text


def test_session_of_certificate_user_passes(
    start_proxy: StartProxy, dovecot: DovecotServer, database: Path, pki: ClientPki
) -> None:
    # The portal may spell the user name in another case.
    add_row(database, "otheruser", expires_in=60)
    add_row(database, VPN_USER.upper(), expires_in=60)
    proxy, context = start_with_certificate(start_proxy, database, pki)
    assert b"a OK" in login_reply(proxy, dovecot, context)

    record = last_record(proxy)
    assert record["methods"] == ["certificate", "piggyback", "mailhost"]
    assert record["identity"] == VPN_USER


def test_expired_session_of_certificate_user_fails(
    start_proxy: StartProxy, dovecot: DovecotServer, database: Path, pki: ClientPki
) -> None:
    add_row(database, VPN_USER, expires_in=-1)
    proxy, context = start_with_certificate(start_proxy, database, pki)
    assert login_reply(proxy, dovecot, context).startswith(IMAP_FAILURE)

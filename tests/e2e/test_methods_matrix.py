"""``mailhost`` alone and ``piggyback`` on the POP3S and SMTPS listeners.

The IMAP4S listener's cases live in the method-specific test files; these
cover the other two protocols with real clients, Dovecot and Postfix.
"""

from __future__ import annotations

import poplib
import smtplib
import sqlite3
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailproxy_core.proxy.piggyback import create_database

from .dovecot import DovecotServer
from .inbox import take_delivered
from .postfix import DOMAIN, PostfixServer
from .proxyfixtures import CLIENT_TIMEOUT, MAIL_USER, RunningProxy, StartProxy

pytestmark = pytest.mark.e2e


def web_sessions(tmp_path: Path, *, expires_in: int | None) -> Path:
    """Create the web sessions database, with one row for 127.0.0.1 or none."""
    path = tmp_path / "web-sessions.db"
    create_database(path)
    if expires_in is not None:
        with sqlite3.connect(path) as connection:
            row = ("vpnuser", "127.0.0.1", int(time.time()) + expires_in)
            connection.execute("INSERT INTO web_sessions VALUES (?, ?, ?)", row)
        connection.close()
    return path


def listeners(
    dovecot: DovecotServer, postfix: PostfixServer, methods: list[str]
) -> dict[str, Any]:
    return {
        "pop3s": {
            "listen": "127.0.0.1:0",
            "authentication": methods,
            "default_server": "mail",
            "servers": {"mail": {"host": dovecot.host, "port": dovecot.pop3_port}},
        },
        "smtps": {
            "listen": "127.0.0.1:0",
            "authentication": methods,
            "default_server": "mail",
            "servers": {
                "mail": {"host": postfix.host, "port": postfix.submission_port}
            },
        },
    }


def pop3_login(proxy: RunningProxy, password: str) -> bytes:
    client = poplib.POP3_SSL(
        proxy.host,
        proxy.port_of("pop3s"),
        context=proxy.client_context(),
        timeout=CLIENT_TIMEOUT,
    )
    try:
        client.user(MAIL_USER)
        return client.pass_(password)
    except poplib.error_proto as error:
        return error.args[0]
    finally:
        client.close()


def send_message(proxy: RunningProxy, password: str) -> str:
    message = EmailMessage()
    message_id = f"<{uuid.uuid4().hex}@mailproxy.test>"
    message["From"] = message["To"] = f"{MAIL_USER}@{DOMAIN}"
    message["Subject"] = "method matrix"
    message["Message-ID"] = message_id
    message.set_content("Sent through the SMTPS listener.\r\n")
    with smtplib.SMTP_SSL(
        proxy.host,
        proxy.port_of("smtps"),
        context=proxy.client_context(),
        timeout=CLIENT_TIMEOUT,
    ) as client:
        client.login(MAIL_USER, password)
        client.send_message(message)
    return message_id


@pytest.mark.parametrize("methods", [["mailhost"], ["piggyback", "mailhost"]])
def test_pop3s_and_smtps_log_in(
    start_proxy: StartProxy,
    dovecot: DovecotServer,
    postfix: PostfixServer,
    tmp_path: Path,
    methods: list[str],
) -> None:
    database = web_sessions(tmp_path, expires_in=60)
    proxy = start_proxy(
        {
            "piggyback": {"database": str(database)},
            **listeners(dovecot, postfix, methods),
        }
    )
    password = dovecot.users[MAIL_USER]
    assert pop3_login(proxy, password).startswith(b"+OK")
    message_id = send_message(proxy, password)
    assert b"Sent through the SMTPS listener." in take_delivered(
        dovecot, MAIL_USER, message_id
    )


@pytest.mark.parametrize("expires_in", [None, -60])
def test_piggyback_without_live_session_fails(
    start_proxy: StartProxy,
    dovecot: DovecotServer,
    postfix: PostfixServer,
    tmp_path: Path,
    expires_in: int | None,
) -> None:
    database = web_sessions(tmp_path, expires_in=expires_in)
    methods = ["piggyback", "mailhost"]
    proxy = start_proxy(
        {
            "piggyback": {"database": str(database)},
            **listeners(dovecot, postfix, methods),
        }
    )
    password = dovecot.users[MAIL_USER]
    assert pop3_login(proxy, password) == b"-ERR [AUTH] Authentication failed"
    with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
        send_message(proxy, password)
    assert failure.value.smtp_code == 535
    assert failure.value.smtp_error == b"5.7.8 Authentication credentials invalid"

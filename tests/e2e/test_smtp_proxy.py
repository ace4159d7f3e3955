"""End-to-end test of the SMTPS listener in front of Postfix submission."""

from __future__ import annotations

import smtplib
import uuid

import pytest

from .dovecot import DovecotServer
from .inbox import split_body, take_delivered
from .postfix import DOMAIN, PostfixServer
from .proxyfixtures import (
    CLIENT_TIMEOUT,
    MAIL_USER,
    VPN_PASSWORD,
    VPN_USER,
    StartProxy,
)

pytestmark = pytest.mark.e2e

SENDER = f"{MAIL_USER}@{DOMAIN}"
BODY = b"Sent through the SMTPS proxy.\r\n.A line that starts with a dot.\r\n"


def test_smtps_submission_delivers(
    start_proxy: StartProxy, dovecot: DovecotServer, postfix: PostfixServer
) -> None:
    smtps = {
        "listen": "127.0.0.1:0",
        "authentication": ["aaa", "mailhost"],
        "authentication_server_group": "LOCAL",
        "default_server": "submission",
        "servers": {
            "submission": {"host": postfix.host, "port": postfix.submission_port}
        },
    }
    proxy = start_proxy({"smtps": smtps})
    message_id = f"<{uuid.uuid4().hex}@mailproxy.test>"
    message = (
        f"From: <{SENDER}>\r\nTo: <{SENDER}>\r\nSubject: proxy test\r\n"
        f"Message-ID: {message_id}\r\n\r\n"
    ).encode() + BODY

    with smtplib.SMTP_SSL(
        proxy.host,
        proxy.port_of("smtps"),
        context=proxy.client_context(),
        timeout=CLIENT_TIMEOUT,
    ) as smtp:
        smtp.login(
            f"{VPN_USER}:{MAIL_USER}", f"{VPN_PASSWORD}:{dovecot.users[MAIL_USER]}"
        )
        refused = smtp.sendmail(SENDER, [SENDER], message)
        assert refused == {}

    stored = take_delivered(dovecot, MAIL_USER, message_id)
    assert split_body(stored) == BODY

"""Checks of the Postfix fixture itself, with plain clients and no proxy."""

from __future__ import annotations

import shutil
import smtplib
import subprocess
import time
import uuid

import pytest

from .conftest import unavailable
from .dovecot import DovecotServer
from .inbox import split_body, take_delivered
from .postfix import DOMAIN, PostfixServer

pytestmark = pytest.mark.e2e

CLIENT_TIMEOUT = 10.0
SWAKS_TIMEOUT = 30.0
LOG_TIMEOUT = 5.0

SENDER = f"mailuser@{DOMAIN}"

# Lines that SMTP must carry unchanged: one needs dot-stuffing, one is 8-bit
# UTF-8, which needs BODY=8BITMIME.
BODY = (
    b"Hello over SMTP.\r\n"
    b".This line starts with a dot.\r\n"
    b"\r\n" + "Grüße aus Köln ✓\r\n".encode()
)


def make_message(recipient: str) -> tuple[str, bytes]:
    """Build a message with a unique Message-ID and Subject.

    :param recipient: Address for the To header.
    :returns: The Message-ID header value and the whole message.
    """
    token = uuid.uuid4().hex
    message_id = f"<{token}@mailproxy.test>"
    header = (
        f"From: Mail User <{SENDER}>\r\n"
        f"To: <{recipient}>\r\n"
        f"Subject: Postfix fixture test {token}\r\n"
        f"Message-ID: {message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
    )
    return message_id, header.encode() + BODY


def send(smtp: smtplib.SMTP, recipient: str, message: bytes) -> None:
    """Send ``message`` from :data:`SENDER` to ``recipient``.

    :param smtp: Client after EHLO, and after AUTH where the port needs it.
    :param recipient: Envelope recipient.
    :param message: The whole message with CRLF line endings.
    """
    refused = smtp.sendmail(
        SENDER, [recipient], message, mail_options=["BODY=8BITMIME"]
    )
    assert refused == {}


def wait_for_log_line(postfix: PostfixServer, text: str) -> str:
    """Poll Postfix's log until a line contains ``text``.

    :param postfix: The server whose log to read.
    :param text: Text to look for, such as ``QUEUEID: to=<``.
    :returns: The first line that contains it.
    """
    deadline = time.monotonic() + LOG_TIMEOUT
    while True:
        for line in postfix.read_log().splitlines():
            if text in line:
                return line
        assert time.monotonic() < deadline, postfix.read_log()
        time.sleep(0.05)


def test_submission_offers_auth(postfix: PostfixServer) -> None:
    with smtplib.SMTP(
        postfix.host, postfix.submission_port, timeout=CLIENT_TIMEOUT
    ) as smtp:
        smtp.ehlo("client.example")
        assert smtp.has_extn("auth")
        mechanisms = smtp.esmtp_features["auth"].split()
        assert "PLAIN" in mechanisms
        assert "LOGIN" in mechanisms


def test_submission_delivers_to_inbox(
    postfix: PostfixServer, dovecot: DovecotServer
) -> None:
    message_id, message = make_message(SENDER)
    with smtplib.SMTP(
        postfix.host, postfix.submission_port, timeout=CLIENT_TIMEOUT
    ) as smtp:
        smtp.ehlo("client.example")
        smtp.login("mailuser", dovecot.users["mailuser"])
        send(smtp, SENDER, message)

    stored = take_delivered(dovecot, "mailuser", message_id)
    assert split_body(stored) == BODY
    assert message.partition(b"\r\n\r\n")[0] in stored
    assert b"by postfix.example (Postfix) with ESMTPA" in stored


def test_delivery_is_logged(postfix: PostfixServer, dovecot: DovecotServer) -> None:
    message_id, message = make_message(SENDER)
    with smtplib.SMTP(
        postfix.host, postfix.submission_port, timeout=CLIENT_TIMEOUT
    ) as smtp:
        smtp.login("mailuser", dovecot.users["mailuser"])
        smtp.mail(SENDER, ["BODY=8BITMIME"])
        smtp.rcpt(SENDER)
        code, reply = smtp.data(message)
    assert code == 250, reply
    queue_id = reply.decode().rpartition("queued as ")[2]
    assert queue_id, reply

    take_delivered(dovecot, "mailuser", message_id)
    cleanup_line = wait_for_log_line(postfix, f"{queue_id}: message-id=")
    assert message_id in cleanup_line
    delivery_line = wait_for_log_line(postfix, f"{queue_id}: to=<{SENDER}>")
    assert "status=sent" in delivery_line
    assert "postfix/lmtp" in delivery_line


def test_wrong_password_gets_535(
    postfix: PostfixServer, dovecot: DovecotServer
) -> None:
    with smtplib.SMTP(
        postfix.host, postfix.submission_port, timeout=CLIENT_TIMEOUT
    ) as smtp:
        with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
            smtp.login("mailuser", "wrong-password")
        assert failure.value.smtp_code == 535

        # The session stays usable, and a later correct login succeeds.
        code, _reply = smtp.login("mailuser", dovecot.users["mailuser"])
        assert code == 235


def test_submission_rejects_unauthenticated_recipient(
    postfix: PostfixServer,
) -> None:
    with smtplib.SMTP(
        postfix.host, postfix.submission_port, timeout=CLIENT_TIMEOUT
    ) as smtp:
        smtp.ehlo("client.example")
        smtp.mail(SENDER)
        code, reply = smtp.rcpt(SENDER)
        assert code == 554, reply


def test_unknown_recipient_rejected(
    postfix: PostfixServer, dovecot: DovecotServer
) -> None:
    with smtplib.SMTP(
        postfix.host, postfix.submission_port, timeout=CLIENT_TIMEOUT
    ) as smtp:
        smtp.login("mailuser", dovecot.users["mailuser"])
        smtp.mail(SENDER)
        code, reply = smtp.rcpt(f"nobody@{DOMAIN}")
        assert code == 550, reply


def test_outside_domain_rejected(
    postfix: PostfixServer, dovecot: DovecotServer
) -> None:
    # The error transport handles every domain but the test domain, and smtpd
    # rejects recipients that resolve to it, so nothing is even queued.
    with smtplib.SMTP(
        postfix.host, postfix.submission_port, timeout=CLIENT_TIMEOUT
    ) as smtp:
        smtp.login("mailuser", dovecot.users["mailuser"])
        smtp.mail(SENDER)
        code, reply = smtp.rcpt("someone@example.com")
        assert code == 550, reply


def test_trusted_port_delivers_without_auth(
    postfix: PostfixServer, dovecot: DovecotServer
) -> None:
    recipient = f"otheruser@{DOMAIN}"
    message_id, message = make_message(recipient)
    with smtplib.SMTP(
        postfix.host, postfix.trusted_port, timeout=CLIENT_TIMEOUT
    ) as smtp:
        smtp.ehlo("client.example")
        assert not smtp.has_extn("auth")
        send(smtp, recipient, message)

    stored = take_delivered(dovecot, "otheruser", message_id)
    assert split_body(stored) == BODY
    assert b"by postfix.example (Postfix) with ESMTP " in stored


def require_swaks() -> str:
    """Locate ``swaks``, or end the test when it is missing.

    :returns: The path of ``swaks``.
    :raises pytest.fail.Exception: When it is missing and ``CI=true``.
    :raises pytest.skip.Exception: When it is missing otherwise.
    """
    found = shutil.which("swaks")
    if found is None:
        unavailable("swaks is not installed; run scripts/run-tests, which installs it")
    return found


def test_swaks_auth_plain_delivers(
    postfix: PostfixServer, dovecot: DovecotServer
) -> None:
    swaks = require_swaks()
    message_id = f"<{uuid.uuid4().hex}@mailproxy.test>"
    command = [
        swaks,
        "--server", postfix.host,
        "--port", str(postfix.submission_port),
        "--ehlo", "client.example",
        "--auth", "PLAIN",
        "--auth-user", "mailuser",
        "--auth-password", dovecot.users["mailuser"],
        "--from", SENDER,
        "--to", SENDER,
        "--header", f"Message-Id: {message_id}",
        "--body", "Sent by swaks.",
        "--timeout", "10",
    ]  # fmt: skip
    completed = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=SWAKS_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout.decode(errors="replace")

    stored = take_delivered(dovecot, "mailuser", message_id)
    assert split_body(stored).startswith(b"Sent by swaks.")

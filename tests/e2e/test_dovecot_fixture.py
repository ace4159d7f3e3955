"""Checks of the Dovecot fixture itself, with plain clients and no proxy."""

from __future__ import annotations

import imaplib
import poplib
import time

import pytest

from .dovecot import DovecotServer

pytestmark = pytest.mark.e2e

CLIENT_TIMEOUT = 10.0

# With this fixture's settings a failed login takes about 0.5 s. With the anvil
# auth penalty on, the second failure in a row takes about 4.5 s (both measured
# with Dovecot 2.3.19).
FAST_LOGIN = 3.0


def fetch_body(imap: imaplib.IMAP4, number: int) -> bytes:
    """Fetch one message with ``BODY.PEEK[]``, which leaves its flags alone.

    :param imap: Client in the selected state.
    :param number: Message sequence number.
    :returns: The message bytes as the server sent them.
    """
    status, data = imap.fetch(str(number), "(BODY.PEEK[])")
    assert status == "OK"

    # imaplib returns the literal as the second item of a (prefix, bytes) pair.
    item = data[0]
    assert isinstance(item, tuple)
    body = item[1]
    assert isinstance(body, bytes)
    return body


def test_imap_fetch_returns_seeded_bytes(dovecot: DovecotServer) -> None:
    with imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=CLIENT_TIMEOUT) as imap:
        imap.login("mailuser", dovecot.users["mailuser"])
        status, data = imap.select("INBOX")
        assert status == "OK"
        assert data == [str(len(dovecot.messages)).encode()]

        for number, expected in enumerate(dovecot.messages, start=1):
            assert fetch_body(imap, number) == expected


def test_pop3_retr_returns_seeded_bytes(dovecot: DovecotServer) -> None:
    pop = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=CLIENT_TIMEOUT)
    try:
        pop.user("mailuser")
        pop.pass_(dovecot.users["mailuser"])
        count, _size = pop.stat()
        assert count == len(dovecot.messages)

        # poplib strips each CRLF and undoes the dot-stuffing.
        for number, expected in enumerate(dovecot.messages, start=1):
            _response, lines, _octets = pop.retr(number)
            assert b"\r\n".join(lines) + b"\r\n" == expected
    finally:
        pop.quit()


def test_second_user_has_empty_inbox(dovecot: DovecotServer) -> None:
    with imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=CLIENT_TIMEOUT) as imap:
        imap.login("otheruser", dovecot.users["otheruser"])
        status, data = imap.select("INBOX")
        assert status == "OK"
        assert data == [b"0"]


def test_wrong_password_fails_quickly(dovecot: DovecotServer) -> None:
    for _attempt in range(3):
        started = time.monotonic()
        with (
            imaplib.IMAP4(
                dovecot.host, dovecot.imap_port, timeout=CLIENT_TIMEOUT
            ) as imap,
            pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"),
        ):
            imap.login("mailuser", "wrong-password")
        assert time.monotonic() - started < FAST_LOGIN

    # The anvil penalty would also delay this login after the failures.
    started = time.monotonic()
    with imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=CLIENT_TIMEOUT) as imap:
        status, _data = imap.login("mailuser", dovecot.users["mailuser"])
        assert status == "OK"
    assert time.monotonic() - started < FAST_LOGIN


def test_log_records_login(dovecot: DovecotServer) -> None:
    entry = "Login: user=<otheruser>"
    earlier = dovecot.read_log().count(entry)
    with imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=CLIENT_TIMEOUT) as imap:
        imap.login("otheruser", dovecot.users["otheruser"])

    # Dovecot's log process writes the file asynchronously.
    deadline = time.monotonic() + 5.0
    while dovecot.read_log().count(entry) == earlier:
        assert time.monotonic() < deadline, dovecot.read_log()
        time.sleep(0.05)

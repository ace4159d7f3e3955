"""Read messages that a test delivered into a Dovecot user's INBOX.

Tests that send mail through Postfix use :func:`take_delivered` to wait for
the message over IMAP and then remove it, so that mailuser's INBOX again
contains only the seeded messages and otheruser's is empty. Other tests
assert exactly that, so a test that leaves its message behind breaks them.
"""

from __future__ import annotations

import imaplib
import time

from .dovecot import DovecotServer

CLIENT_TIMEOUT = 10.0
DELIVERY_TIMEOUT = 15.0
POLL_INTERVAL = 0.1


class DeliveryTimeoutError(AssertionError):
    """No message with the expected Message-ID arrived in time."""


def find_uid(imap: imaplib.IMAP4, message_id: str) -> str | None:
    """Search the selected mailbox for a message by its Message-ID header.

    :param imap: Client in the selected state.
    :param message_id: The header value, such as ``<abc@example.org>``.
    :returns: The UID of the first match, or ``None`` when nothing matches.
    """
    status, data = imap.uid("SEARCH", "HEADER", "Message-ID", f'"{message_id}"')
    assert status == "OK", data

    uids = data[0].split() if data and data[0] else []
    return uids[0].decode() if uids else None


def fetch_message(imap: imaplib.IMAP4, uid: str) -> bytes:
    """Fetch one message with ``BODY.PEEK[]``, which leaves its flags alone.

    :param imap: Client in the selected state.
    :param uid: UID of the message.
    :returns: The message bytes as Dovecot stored them.
    """
    status, data = imap.uid("FETCH", uid, "(BODY.PEEK[])")
    assert status == "OK", data

    # imaplib returns the literal as the second item of a (prefix, bytes) pair.
    item = data[0]
    assert isinstance(item, tuple), data
    message = item[1]
    assert isinstance(message, bytes), data
    return message


def delete_message(imap: imaplib.IMAP4, uid: str) -> None:
    """Remove one message for good, leaving every other message alone.

    :param imap: Client in the selected, read-write state.
    :param uid: UID of the message.
    """
    status, data = imap.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)")
    assert status == "OK", data

    # UID EXPUNGE (RFC 4315) expunges only this UID, unlike plain EXPUNGE.
    status, data = imap.uid("EXPUNGE", uid)
    assert status == "OK", data


def wait_for_uid(imap: imaplib.IMAP4, message_id: str) -> str:
    """Poll the INBOX until a message with ``message_id`` is in it.

    :param imap: Logged-in client.
    :param message_id: The Message-ID header value to wait for.
    :returns: The UID of the message.
    :raises DeliveryTimeoutError: When it does not arrive within
        :data:`DELIVERY_TIMEOUT` seconds.
    """
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while True:
        # A new SELECT makes Dovecot rescan the Maildir for new files.
        status, data = imap.select("INBOX")
        assert status == "OK", data

        uid = find_uid(imap, message_id)
        if uid is not None:
            return uid
        if time.monotonic() >= deadline:
            message = (
                f"{message_id} did not arrive in the INBOX within "
                f"{DELIVERY_TIMEOUT} s. Check the Postfix and Dovecot logs."
            )
            raise DeliveryTimeoutError(message)
        time.sleep(POLL_INTERVAL)


def take_delivered(dovecot: DovecotServer, user: str, message_id: str) -> bytes:
    """Wait for a message in ``user``'s INBOX, fetch it and then delete it.

    :param dovecot: The Dovecot server that stores the mailbox.
    :param user: User whose INBOX receives the message.
    :param message_id: The Message-ID header value, with angle brackets.
    :returns: The message bytes as Dovecot stored them, which include the
        headers that Postfix and Dovecot added.
    :raises DeliveryTimeoutError: When the message does not arrive within
        :data:`DELIVERY_TIMEOUT` seconds.
    """
    with imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=CLIENT_TIMEOUT) as imap:
        imap.login(user, dovecot.users[user])
        uid = wait_for_uid(imap, message_id)
        message = fetch_message(imap, uid)
        delete_message(imap, uid)
    return message


def split_body(message: bytes) -> bytes:
    """Return the body of an RFC 5322 message with CRLF line endings.

    :param message: The whole message.
    :returns: Everything after the empty line that ends the header section.
    """
    _header, separator, body = message.partition(b"\r\n\r\n")
    assert separator, message
    return body

"""Listener keys that only one protocol has, and the sessions they shape.

``[imap4s]``
    ``imap4rev2`` (default false): announce ``IMAP4rev2`` (RFC 9051) before
    login, as well as ``IMAP4rev1``. Set it only when every upstream of the
    listener supports it.
``[smtps]``
    ``hostname`` (default ``mailproxy``): the name in the greeting and the
    EHLO reply. ``size`` (octets, default none): the ``SIZE`` limit to
    announce (RFC 1870). ``eightbitmime`` (default true) and ``smtputf8``
    (default false): announce ``8BITMIME`` (RFC 6152) and ``SMTPUTF8``
    (RFC 6531). SMTP clients do not repeat EHLO after AUTH, so announce
    only what every upstream offers.
"""

from __future__ import annotations

import functools

from ..imap import ImapSession
from ..smtp import SmtpOptions, SmtpSession
from .configtable import ConfigTable
from .protocols import ProtocolSpec, SessionFactory


def read_session_factory(table: ConfigTable, spec: ProtocolSpec) -> SessionFactory:
    """Return what builds the sessions of the listener ``table``.

    :raises ConfigurationError: naming an invalid protocol-specific key.
    """
    if spec.session_class is ImapSession:
        imap4rev2 = table.boolean("imap4rev2", False)
        return functools.partial(ImapSession, imap4rev2=imap4rev2)
    if spec.session_class is SmtpSession:
        return functools.partial(SmtpSession, options=_read_smtp_options(table))
    return spec.session_class


def _read_smtp_options(table: ConfigTable) -> SmtpOptions:
    hostname = table.string("hostname", "mailproxy")
    assert hostname is not None
    if not hostname or any(c.isspace() for c in hostname):
        raise table.error("hostname", f"{hostname!r} is invalid; use a host name")
    size = table.integer("size", 0)
    return SmtpOptions(
        hostname=hostname,
        size=size or None,
        eightbitmime=table.boolean("eightbitmime", True),
        smtputf8=table.boolean("smtputf8", False),
    )

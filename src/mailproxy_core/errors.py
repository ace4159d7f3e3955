"""Exception types of the core.

Two families, as in h11 and wsproto: :class:`LocalProtocolError` when the
driver calls the core in a way the current state does not allow, and
:class:`RemoteProtocolError` when a peer sends bytes the protocol forbids.
The remote error carries the reply that the protocol sends back.
"""

from __future__ import annotations


class MailProxyError(Exception):
    """Base class of every exception that the core raises on purpose."""


class ConfigurationError(MailProxyError, ValueError):
    """A setting is invalid; the message names the setting and allowed values."""


class LocalProtocolError(MailProxyError, RuntimeError):
    """The driver called the core in a state that does not allow the call."""


class RemoteProtocolError(MailProxyError):
    """A peer violated the protocol in a way that ends the connection.

    :param message: what was wrong, for logs; never contains a secret.
    :param reply: bytes to send to the peer before closing, possibly empty.
    """

    def __init__(self, message: str, *, reply: bytes = b"") -> None:
        super().__init__(message)
        self.reply = reply


class CredentialsError(MailProxyError, ValueError):
    """Typed credentials could not be split into the parts that are needed.

    The session turns it into an ordinary authentication failure; ``reason``
    is for the driver's log and never contains a secret.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SaslError(MailProxyError, ValueError):
    """A SASL message is malformed: bad base64, bad framing or bad text."""

"""SMTP submission (RFC 5321, RFC 4954, RFC 3207) on the shared session.

:class:`SmtpSession` is what a driver creates per client connection.
"""

from __future__ import annotations

from ..machine import ClientAddress, ClientMachine, UpstreamLogin, UpstreamMachine
from ..session import Session
from ..settings import Limits, SessionSettings, UpstreamServer
from .client import SmtpClientMachine, SmtpOptions
from .upstream import SmtpUpstreamMachine

__all__ = [
    "SMTP_LIMITS",
    "SmtpClientMachine",
    "SmtpOptions",
    "SmtpSession",
    "SmtpUpstreamMachine",
]

#: SMTP's limits before authentication: 512-octet command lines (RFC 5321
#: section 4.5.3.1.4) and 12,288-octet SASL lines (RFC 4954 section 4).
SMTP_LIMITS = Limits(max_line=512, max_sasl_line=12288, max_literal=0)


class SmtpSession(Session):
    """One SMTP submission connection through the proxy.

    Unlike IMAP and POP3, ``mailhost`` is optional: with ``aaa`` alone the
    typed credentials are the VPN credentials, and the upstream is not
    asked to authenticate.

    :param settings: the listener's settings.
    :param options: the host name and extensions to announce.
    """

    DEFAULT_LIMITS = SMTP_LIMITS
    PROTOCOL = "smtps"

    def __init__(
        self, settings: SessionSettings, *, options: SmtpOptions | None = None
    ) -> None:
        self._options = options or SmtpOptions()
        super().__init__(settings)

    def _make_client_machine(self) -> ClientMachine:
        self._smtp_client = SmtpClientMachine(self.settings, self.limits, self._options)
        return self._smtp_client

    def _make_upstream_machine(
        self,
        server: UpstreamServer,
        login: UpstreamLogin | None,
        *,
        client_address: ClientAddress | None,
    ) -> UpstreamMachine:
        name = self._smtp_client.client_name or self._options.hostname
        return SmtpUpstreamMachine(
            server, login, client_name=name, client_address=client_address
        )

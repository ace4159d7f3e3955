"""IMAP4 (RFC 9051, RFC 3501) on the shared session.

:class:`ImapSession` is what a driver creates per client connection.
"""

from __future__ import annotations

from ..errors import ConfigurationError
from ..machine import ClientAddress, ClientMachine, UpstreamLogin, UpstreamMachine
from ..session import Session
from ..settings import AuthMethod, Limits, SessionSettings, UpstreamServer
from .client import ImapClientMachine
from .upstream import ImapUpstreamMachine

__all__ = ["ImapClientMachine", "ImapSession", "ImapUpstreamMachine"]


class ImapSession(Session):
    """One IMAP4 client connection through the proxy.

    Its default limits: 8 KiB command lines (literals excluded), 12 KiB
    SASL response lines, 8 KiB literals, 64 KiB held and 50 commands
    before authentication.

    :param settings: the listener's settings; ``mailhost`` must be among
        the methods, because the proxy always logs in upstream.
    :param imap4rev2: advertise ``IMAP4rev2`` before login; set it only
        when every configured upstream supports it.
    :raises ConfigurationError: when ``mailhost`` is not configured.
    """

    DEFAULT_LIMITS = Limits()
    PROTOCOL = "imap4s"

    def __init__(self, settings: SessionSettings, *, imap4rev2: bool = False) -> None:
        if AuthMethod.MAILHOST not in settings.methods:
            raise ConfigurationError("IMAP authentication must include mailhost")
        self._imap4rev2 = imap4rev2
        super().__init__(settings)

    def _make_client_machine(self) -> ClientMachine:
        return ImapClientMachine(self.settings, self.limits, imap4rev2=self._imap4rev2)

    def _make_upstream_machine(
        self,
        server: UpstreamServer,
        login: UpstreamLogin | None,
        *,
        client_address: ClientAddress | None,
    ) -> UpstreamMachine:
        return ImapUpstreamMachine(server, login, client_address=client_address)

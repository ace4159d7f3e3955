"""POP3 (RFC 1939, RFC 2449, RFC 5034) on the shared session.

:class:`PopSession` is what a driver creates per client connection.
"""

from __future__ import annotations

from ..errors import ConfigurationError
from ..machine import ClientAddress, ClientMachine, UpstreamLogin, UpstreamMachine
from ..session import Session
from ..settings import AuthMethod, Limits, SessionSettings, UpstreamServer
from .client import PopClientMachine
from .upstream import PopUpstreamMachine

__all__ = ["POP3_LIMITS", "PopClientMachine", "PopSession", "PopUpstreamMachine"]

#: POP3's limits before authentication. RFC 2449 section 4 bounds a command
#: line to 255 octets with CRLF; SASL response lines may reach 12,288
#: octets (the RFC 4954 figure), room for OAuth bearer tokens.
POP3_LIMITS = Limits(max_line=255, max_sasl_line=12288, max_literal=0)


class PopSession(Session):
    """One POP3 client connection through the proxy.

    :param settings: the listener's settings; ``mailhost`` must be among
        the methods, because the proxy always logs in upstream.
    :raises ConfigurationError: when ``mailhost`` is not configured.
    """

    DEFAULT_LIMITS = POP3_LIMITS
    PROTOCOL = "pop3s"

    def __init__(self, settings: SessionSettings) -> None:
        if AuthMethod.MAILHOST not in settings.methods:
            raise ConfigurationError("POP3 authentication must include mailhost")
        super().__init__(settings)

    def _make_client_machine(self) -> ClientMachine:
        return PopClientMachine(self.settings, self.limits)

    def _make_upstream_machine(
        self,
        server: UpstreamServer,
        login: UpstreamLogin | None,
        *,
        client_address: ClientAddress | None,
    ) -> UpstreamMachine:
        return PopUpstreamMachine(server, login, client_address=client_address)

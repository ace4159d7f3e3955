"""In-memory IMAP logins: the proxy's two machines beside Twisted's server.

The core side runs a whole proxied login: the proxy's greeting, the
client's ``LOGIN``, a passing ``aaa`` check, the upstream's greeting and
its tagged ``OK``. The Twisted side runs ``IMAP4Server`` through its
greeting, a ``CAPABILITY`` and a ``LOGIN`` against an in-memory user. Both
sides build their settings or portal once, as a listener would, so a
round times only the per-connection protocol work.
"""

from __future__ import annotations

from typing import Final

from measure import Plan, time_pair
from report import Figure, Measurement
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.mail.imap4 import IAccount, IMAP4Server, MemoryAccount
from zope.interface import implementer

from mailproxy_core import events as ev
from mailproxy_core.imap import ImapSession
from mailproxy_core.settings import AuthMethod, SessionSettings, UpstreamServer
from mailproxy_core.states import ConnectionState

SERVER: Final = UpstreamServer(name="mail", host="127.0.0.1", port=10143)
SETTINGS: Final = SessionSettings(servers={"mail": SERVER}, default_server="mail")

CLIENT_LOGIN: Final = b"a1 LOGIN vpnuser:mailuser vpnpass:mailpass\r\n"
UPSTREAM_GREETING: Final = b"* OK [CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN] ready\r\n"
UPSTREAM_OK: Final = b"mp1 OK [CAPABILITY IMAP4rev1] Logged in\r\n"

TWISTED_CAPABILITY: Final = b"a1 CAPABILITY\r\n"
TWISTED_LOGIN: Final = b"a2 LOGIN mailuser mailpass\r\n"

FULL: Final = Plan(warmup=2, repeats=9)
QUICK: Final = Plan(warmup=1, repeats=5)
FULL_HANDSHAKES: Final = 4_000
QUICK_HANDSHAKES: Final = 400


def core_handshake(settings: SessionSettings) -> tuple[ImapSession, list[ev.Event]]:
    """Run one proxied IMAP login from the greeting to the relay.

    :param settings: the listener's settings.
    :returns: the session and every event that it returned, in order.
    """
    session = ImapSession(settings)
    events = session.start()
    events += session.receive_client(CLIENT_LOGIN)
    events += session.authentication_result(AuthMethod.AAA, success=True)
    events += session.upstream_connected()
    events += session.receive_upstream(UPSTREAM_GREETING)
    events += session.receive_upstream(UPSTREAM_OK)
    return session, events


def check_core(session: ImapSession, events: list[ev.Event]) -> None:
    """Raise unless a core login ended authenticated with a tagged OK.

    :raises RuntimeError: when the login did not succeed.
    """
    to_client = b"".join(e.data for e in events if isinstance(e, ev.SendToClient))
    to_upstream = b"".join(e.data for e in events if isinstance(e, ev.SendToUpstream))
    if session.state is not ConnectionState.AUTHENTICATED:
        raise RuntimeError(f"core login ended in state {session.state.value}")
    if b"\r\na1 OK " not in to_client:
        raise RuntimeError(f"core login sent no tagged OK: {to_client!r}")
    if not to_upstream.startswith(b"mp1 LOGIN "):
        raise RuntimeError("core login sent no LOGIN command upstream")


def authenticated_session() -> ImapSession:
    """Return a checked core session that relays.

    :raises RuntimeError: when the login did not succeed.
    """
    session, events = core_handshake(SETTINGS)
    check_core(session, events)
    return session


@implementer(IRealm)
class _Realm:
    """A realm that returns one shared in-memory account to every login."""

    def __init__(self) -> None:
        self._account = MemoryAccount("mailuser")

    # IRealm fixes the camel-case name.
    def requestAvatar(
        self, avatar_id: bytes, mind: object, *interfaces: object
    ) -> tuple[object, MemoryAccount, object]:
        if IAccount not in interfaces:
            raise NotImplementedError("this realm only returns IAccount avatars")
        return IAccount, self._account, _logout


def _logout() -> None:
    """Do nothing, because the shared account outlives every connection."""


def make_portal() -> Portal:
    """Return a portal that accepts ``mailuser`` with password ``mailpass``."""
    checker = InMemoryUsernamePasswordDatabaseDontUse(mailuser=b"mailpass")
    return Portal(_Realm(), [checker])


def twisted_handshake(portal: Portal) -> tuple[IMAP4Server, StringTransport]:
    """Run Twisted's IMAP server through greeting, CAPABILITY and LOGIN.

    :param portal: the portal that checks the login.
    :returns: the server protocol and the transport with its output.
    """
    server = IMAP4Server()
    server.portal = portal
    # IMAP4Server arms idle timeouts. A private fake clock takes them, so
    # no reactor runs and no timer list grows across handshakes.
    server.callLater = Clock().callLater
    transport = StringTransport()
    server.makeConnection(transport)
    server.dataReceived(TWISTED_CAPABILITY)
    server.dataReceived(TWISTED_LOGIN)
    return server, transport


def check_twisted(server: IMAP4Server, transport: StringTransport) -> None:
    """Raise unless a Twisted login wrote its tagged OK.

    :raises RuntimeError: when the login did not succeed.
    """
    output = transport.value()
    if b"\r\na2 OK LOGIN succeeded\r\n" not in output:
        raise RuntimeError(f"Twisted login sent no tagged OK: {output!r}")
    if server.state != "auth":
        raise RuntimeError(f"Twisted login ended in state {server.state!r}")


def _core_rounds(count: int) -> int:
    for _ in range(count):
        session, events = core_handshake(SETTINGS)
    # Checking the last login costs O(1) beside thousands of handshakes.
    check_core(session, events)
    return count


def _twisted_rounds(portal: Portal, count: int) -> int:
    for _ in range(count):
        server, transport = twisted_handshake(portal)
    check_twisted(server, transport)
    return count


def run(quick: bool) -> list[Figure]:
    """Measure login handshakes per second on both sides.

    :param quick: use the short plan of ``--quick``.
    :returns: one figure, core beside Twisted.
    """
    plan, count = (QUICK, QUICK_HANDSHAKES) if quick else (FULL, FULL_HANDSHAKES)
    portal = make_portal()
    check_core(*core_handshake(SETTINGS))
    check_twisted(*twisted_handshake(portal))

    core, twisted = time_pair(
        lambda: _core_rounds(count), lambda: _twisted_rounds(portal, count), plan
    )
    figure = Figure(
        name="login",
        title="IMAP login handshakes",
        unit="handshakes/s",
        subject=Measurement(
            label="core ImapSession", samples=tuple(r.per_second() for r in core)
        ),
        baseline=Measurement(
            label="Twisted IMAP4Server",
            samples=tuple(r.per_second() for r in twisted),
        ),
        ratio_of="core / Twisted",
        details=(("handshakes_per_round", count),),
    )
    return [figure]

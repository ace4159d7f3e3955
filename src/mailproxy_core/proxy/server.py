"""The listeners of the proxy and its graceful stop.

A :class:`Listener` accepts plain TCP connections for one protocol and
registers each with the listener's
:class:`~mailproxy_core.limit.SessionLimit` before the TLS handshake, so
that slow handshakes count toward the limit. :class:`ProxyServer` runs
every configured listener; :func:`run_proxy` runs it until SIGTERM or
SIGINT.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import ssl
from collections.abc import Mapping
from typing import Final

from ..limit import SessionLimit
from ..settings import UpstreamTLS
from .aaa import AaaGroup
from .aaagroups import build_aaa_groups
from .accounting import Accounting
from .config import ProxyConfig
from .connection import ANY_SERVER, ListenerContext, ProxyConnection
from .listenerconfig import ListenAddress, ListenerConfig
from .piggyback import PiggybackDirectory
from .protocols import SessionFactory
from .stream import PeerStream
from .tls import (
    CertificatePair,
    ServerTls,
    generate_self_signed,
    server_tls,
    upstream_context,
)
from .usersessions import UserSessions

_log = logging.getLogger(__name__)

#: Seconds to wait for aborted connections to finish their cleanup.
ABORT_GRACE: Final = 2.0


def build_upstream_contexts(config: ListenerConfig) -> dict[str, ssl.SSLContext]:
    """Create one TLS client context per upstream server that uses TLS."""
    contexts = {}
    for name, server in config.session.servers.items():
        if server.tls is not UpstreamTLS.NONE:
            ca_file = config.upstream_ca_files.get(name)
            contexts[name] = upstream_context(verify=server.verify, ca_file=ca_file)
    template = config.session.any_server
    if template is not None and template.tls is not UpstreamTLS.NONE:
        contexts[ANY_SERVER] = upstream_context(verify=template.verify, ca_file=None)
    return contexts


class Listener:
    """The sockets and connections of one protocol.

    :param config: the listener's configuration.
    :param session_factory: builds the session of each connection.
    :param tls: the server TLS context.
    :param aaa_group: the group for method ``aaa``, or ``None``.
    :param accounting: where session records go.
    :param user_sessions: the per-user session counts shared by all
        listeners; a new one when ``None``.
    :param piggyback: the web sessions database for method ``piggyback``,
        or ``None``.
    """

    def __init__(
        self,
        config: ListenerConfig,
        *,
        session_factory: SessionFactory,
        tls: ServerTls,
        aaa_group: AaaGroup | None,
        accounting: Accounting,
        user_sessions: UserSessions | None = None,
        piggyback: PiggybackDirectory | None = None,
    ) -> None:
        self.config = config
        self.tls = tls
        self._limit: SessionLimit[str] = SessionLimit(config.outstanding)
        self._context = ListenerContext(
            protocol=config.protocol,
            settings=config.session,
            session_factory=session_factory,
            timeouts=config.timeouts,
            server_context=tls.context,
            aaa_group=aaa_group,
            limit=self._limit,
            accounting=accounting,
            upstream_contexts=build_upstream_contexts(config),
            user_sessions=user_sessions or UserSessions(),
            piggyback=piggyback,
            proxy_protocol=config.proxy_protocol,
        )
        self._servers: list[asyncio.Server] = []
        self._connections: dict[str, ProxyConnection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)

    @property
    def connections(self) -> Mapping[str, ProxyConnection]:
        """The open connections by id."""
        return self._connections

    @property
    def limit(self) -> SessionLimit[str]:
        """The listener's non-authenticated session limit."""
        return self._limit

    def bound_addresses(self) -> list[ListenAddress]:
        """Return the addresses the sockets are bound to, ports resolved."""
        addresses = []
        for server in self._servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                addresses.append(ListenAddress(host=host, port=port))
        return addresses

    async def start(self) -> None:
        """Bind every ``listen`` address.

        :raises OSError: when an address cannot be bound.
        """
        loop = asyncio.get_running_loop()
        for address in self.config.listen:
            server = await loop.create_server(
                self._make_stream, address.host, address.port, reuse_address=True
            )
            self._servers.append(server)
        for address in self.bound_addresses():
            _log.info("%s: listening on %s", self.config.protocol, address)

    def stop_accepting(self) -> None:
        """Close the listening sockets; open connections go on."""
        for server in self._servers:
            server.close()

    def shutdown_sessions(self) -> None:
        """Ask every connection to stop; authenticated ones may drain."""
        for connection in list(self._connections.values()):
            connection.shutdown()

    async def wait_finished(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every connection to close.

        :returns: whether all of them closed in time.
        """
        tasks = set(self._tasks)
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        return not pending

    def abort_all(self, reason: str) -> None:
        """Close every open connection at once."""
        for connection in list(self._connections.values()):
            connection.abort(reason)

    def _make_stream(self) -> PeerStream:
        # The first bytes of the client belong to the TLS handshake or the
        # PROXY header, which the connection reads itself.
        implicit_tls = not self.config.session.starttls_required
        paused = implicit_tls or bool(self.config.proxy_protocol)
        return PeerStream(start_paused=paused, on_connection_made=self._accept)

    def _accept(self, stream: PeerStream) -> None:
        connection_id = f"{self.config.protocol}-{next(self._ids)}"
        for victim_id in self._limit.open(connection_id):
            victim = self._connections.get(victim_id)
            if victim is not None:
                victim.evict()
        try:
            connection = ProxyConnection(
                connection_id=connection_id, context=self._context, client=stream
            )
        except Exception:
            _log.exception("[%s] cannot start the session", connection_id)
            self._limit.close(connection_id)
            stream.abort()
            return
        self._connections[connection_id] = connection
        task = asyncio.create_task(self._run(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, connection: ProxyConnection) -> None:
        try:
            await connection.run()
        except Exception:
            # A driver bug must end this connection only, with a trace.
            _log.exception("[%s] connection failed", connection.id)
            connection.abort("internal error")
        finally:
            self._limit.close(connection.id)
            del self._connections[connection.id]


class ProxyServer:
    """Every listener of one configuration.

    :param config: the validated configuration.
    :raises ConfigurationError: when a configured protocol has no session
        implementation or a users file is malformed.
    :raises OSError: when a certificate or the accounting file cannot be
        read or opened.
    :raises ssl.SSLError: when a certificate and key do not match.
    """

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self._accounting = Accounting(config.accounting_file)
        self.user_sessions = UserSessions()
        self._throwaway: CertificatePair | None = None
        self._piggyback = _build_piggyback(config)
        groups = build_aaa_groups(config)
        self.listeners = [
            self._build_listener(listener, groups)
            for listener in config.active_listeners()
        ]

    def _build_listener(
        self, config: ListenerConfig, groups: Mapping[str, AaaGroup]
    ) -> Listener:
        factory = config.session_factory or config.spec.session_class
        for warning in config.warnings():
            _log.warning("%s", warning)
        if config.certificate is None and self._throwaway is None:
            self._throwaway = generate_self_signed()
        tls = server_tls(
            config.certificate,
            config.private_key,
            listener=config.protocol,
            throwaway=self._throwaway,
            client_certificates=config.client_certificates,
        )
        group = groups.get(config.aaa_group) if config.aaa_group else None
        return Listener(
            config,
            session_factory=factory,
            tls=tls,
            aaa_group=group,
            accounting=self._accounting,
            user_sessions=self.user_sessions,
            piggyback=self._piggyback,
        )

    async def start(self) -> None:
        """Bind every listener.

        :raises OSError: when an address cannot be bound; listeners bound
            before are closed again.
        """
        try:
            for listener in self.listeners:
                await listener.start()
        except OSError:
            self._stop_accepting()
            raise

    async def stop(self, hurry: asyncio.Event | None = None) -> None:
        """Stop gracefully within the configured ``drain_timeout``.

        Listening stops at once. Sessions that have not authenticated get
        the protocol's goodbye and close. Authenticated sessions may go on
        until ``drain_timeout``, or until ``hurry`` is set; the rest are
        then closed.
        """
        self._stop_accepting()
        for listener in self.listeners:
            listener.shutdown_sessions()
        drain = self.config.drain_timeout
        if not await self._drain(drain, hurry):
            if hurry is not None and hurry.is_set():
                _log.warning("second stop signal received; closing the rest now")
            else:
                _log.warning("drain time of %g s is over; closing the rest", drain)
            for listener in self.listeners:
                listener.abort_all("drain timeout at shutdown")
            await self._wait_all(ABORT_GRACE)
        self._accounting.close()

    async def _drain(self, timeout: float, hurry: asyncio.Event | None) -> bool:
        waiting = asyncio.ensure_future(self._wait_all(timeout))
        if hurry is None:
            return await waiting
        hurried = asyncio.ensure_future(hurry.wait())
        done, _ = await asyncio.wait(
            {waiting, hurried}, return_when=asyncio.FIRST_COMPLETED
        )
        hurried.cancel()
        if waiting not in done:
            waiting.cancel()
            return False
        return waiting.result()

    def _stop_accepting(self) -> None:
        for listener in self.listeners:
            listener.stop_accepting()

    async def _wait_all(self, timeout: float) -> bool:
        results = await asyncio.gather(
            *(listener.wait_finished(timeout) for listener in self.listeners)
        )
        return all(results)


def _build_piggyback(config: ProxyConfig) -> PiggybackDirectory | None:
    piggyback = config.piggyback
    if piggyback is None:
        return None
    return PiggybackDirectory(piggyback.database, timeout=piggyback.timeout)


async def run_proxy(config: ProxyConfig) -> None:
    """Run the proxy until SIGTERM or SIGINT, then stop gracefully.

    :raises ConfigurationError: as :class:`ProxyServer` does.
    :raises OSError: when a listen address cannot be bound.
    """
    server = ProxyServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    _log.info("proxy started with %d listeners", len(server.listeners))

    await stop.wait()
    _log.info("stop signal received; draining for up to %g s", config.drain_timeout)
    # A second signal ends the drain at once, as operators expect.
    hurry = asyncio.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, hurry.set)
    await server.stop(hurry)
    _log.info("proxy stopped")

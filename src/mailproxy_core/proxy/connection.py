"""The driver of one client connection: TLS, the session's events, the relay.

:class:`ProxyConnection` owns a client :class:`~.stream.PeerStream`, a
core session and, during and after the login, an upstream stream. Two
tasks feed the session: the connection's own task reads the client and
a second task reads the upstream. Session calls are synchronous, so each
call and the writes of its events happen without interleaving. Only the
handshakes, the AAA and piggyback checks, the upstream connect and relay
back-pressure wait.

Every log line starts with the connection id, such as ``[imap4s-17]``.
No line contains a password.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine, Mapping, MutableMapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from ..authflow import Subject, certificate_identity
from ..delimiters import SplitCredentials
from ..errors import MailProxyError
from ..events import (
    AuthenticationFailed,
    AuthenticationRequired,
    AuthenticationSucceeded,
    CloseConnection,
    CloseUpstream,
    CredentialsObserved,
    Direction,
    Event,
    ForwardData,
    ProtocolErrorObserved,
    SendToClient,
    SendToUpstream,
    Side,
    StartTLS,
    StateChanged,
    UpstreamSelected,
)
from ..limit import SessionLimit
from ..proxyheader import ProxyHeader, ProxyHeaderError
from ..settings import AuthMethod, SessionSettings, UpstreamServer, UpstreamTLS
from ..states import ConnectionState
from .aaa import AaaGroup, AaaResult
from .accounting import Accounting, SessionRecord
from .listenerconfig import Timeouts
from .loadbalancer import Network, is_trusted, read_proxy_header
from .piggyback import PiggybackDirectory, PiggybackResult
from .protocols import ProxySession, SessionFactory
from .stream import PeerStream
from .tls import peer_certificate_subject
from .usersessions import UserSessions

_log = logging.getLogger(__name__)

#: The key of the TLS context for hosts named through ``allow_any_server``.
ANY_SERVER = "*"

#: Seconds that a closing connection may take to send its last bytes.
FLUSH_TIMEOUT: Final = 5.0

_GOODBYE_IDLE: Final = "Autologout; idle for too long"
_GOODBYE_EVICTED: Final = "Too many connections that have not logged in"
_GOODBYE_SHUTDOWN: Final = "Server shutting down"


class ConnectionLog(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter that puts the connection id in front of every line."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """Prefix ``msg`` with ``[ID]``."""
        assert self.extra is not None
        return f"[{self.extra['connection']}] {msg}", kwargs


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerContext:
    """Settings and services that every connection of one listener shares.

    :param protocol: the section name, such as ``imap4s``.
    :param settings: the settings passed to each session.
    :param session_factory: builds the session of a connection.
    :param timeouts: the driver's timeouts.
    :param server_context: the TLS context toward clients.
    :param aaa_group: the AAA server group for method ``aaa``, or ``None``.
    :param limit: the listener's non-authenticated session limit.
    :param accounting: where session records go.
    :param upstream_contexts: TLS client contexts by upstream server name,
        for servers with implicit TLS or STARTTLS.
    :param user_sessions: the sessions per user of the whole process.
    :param piggyback: the web sessions database for method ``piggyback``,
        or ``None``.
    :param proxy_protocol: the load balancers whose connections start with
        a PROXY protocol header; empty when no header is read.
    """

    protocol: str
    settings: SessionSettings
    session_factory: SessionFactory
    timeouts: Timeouts
    server_context: ssl.SSLContext
    aaa_group: AaaGroup | None
    limit: SessionLimit[str]
    accounting: Accounting
    upstream_contexts: Mapping[str, ssl.SSLContext]
    user_sessions: UserSessions
    piggyback: PiggybackDirectory | None = None
    proxy_protocol: tuple[Network, ...] = ()


def describe_error(error: BaseException) -> str:
    """Return a short text for a connect or TLS error, for logs and replies."""
    if isinstance(error, TimeoutError):
        return "timed out"
    text = str(error) or type(error).__name__
    return text


class ProxyConnection:
    """One client connection through the proxy.

    :param connection_id: the id in logs and in the session limit.
    :param context: the listener's shared settings and services.
    :param client: the accepted client stream, paused when the listener
        uses implicit TLS or ``proxy_protocol``, because the connection
        reads the handshake and the PROXY header itself.
    """

    def __init__(
        self, *, connection_id: str, context: ListenerContext, client: PeerStream
    ) -> None:
        self.id = connection_id
        self._context = context
        self._client = client
        self._session: ProxySession = context.session_factory(context.settings)
        self._log = ConnectionLog(_log, {"connection": connection_id})
        peer = client.extra("peername")
        self._peer = _format_address(peer)
        self._peer_host = str(peer[0]) if isinstance(peer, tuple) else None
        self._peer_port = _peer_port(peer)
        self._session_user: str | None = None
        self._loop = asyncio.get_running_loop()
        self._opened_at = self._loop.time()
        self._upstream: PeerStream | None = None
        self._upstream_name: str | None = None
        self._upstream_server: UpstreamServer | None = None
        self._upstream_task: asyncio.Task[None] | None = None
        self._login_deadline = 0.0
        self._login_timer: asyncio.TimerHandle | None = None
        self._read_deadline: asyncio.Timeout | None = None
        self._helpers: set[asyncio.Task[None]] = set()
        self._credentials: SplitCredentials | None = None
        self._certificate_subject: Subject | None = None
        self._passed_methods: list[AuthMethod] = []
        self._started = False
        self._closing = False
        self._authenticated = False
        self._end_reason = ""
        self._bytes_from_client = 0
        self._bytes_to_client = 0

    @property
    def state(self) -> ConnectionState:
        """The session's connection state."""
        return self._session.state

    @property
    def client(self) -> PeerStream:
        """The client stream."""
        return self._client

    @property
    def upstream(self) -> PeerStream | None:
        """The upstream stream, while one is connected."""
        return self._upstream

    @property
    def closing(self) -> bool:
        """Whether the connection is closing or closed."""
        return self._closing

    # Lifecycle ----------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes, then log and account it."""
        self._log.info("open from %s", self._peer)
        try:
            await self._serve()
        finally:
            await self._finish()

    async def _serve(self) -> None:
        if not await self._accept_proxy_header():
            return
        if self._context.settings.starttls_required:
            self._client.resume()
        elif not await self._client_handshake():
            return
        if self._closing:
            return
        self._started = True
        start = partial(
            self._session.start,
            client_address=self._peer_host,
            client_port=self._peer_port,
            certificate_subject=self._read_client_certificate(),
        )
        await self._call(start)
        await self._client_loop()

    async def _accept_proxy_header(self) -> bool:
        # Only a configured load balancer may set the client address, so the
        # first bytes of any other peer are never read as a header.
        if not is_trusted(self._peer_host, self._context.proxy_protocol):
            return True
        timeout = self._context.timeouts.handshake
        try:
            header = await read_proxy_header(self._client, timeout=timeout)
        except ProxyHeaderError as error:
            return self._reject_proxy_header(f"invalid PROXY header: {error}")
        except TimeoutError:
            reason = f"no complete PROXY header within {timeout:g} s"
            return self._reject_proxy_header(reason)
        if header is None:
            reason = "connection closed before the PROXY header was complete"
            return self._reject_proxy_header(reason)
        self._use_proxy_header(header)
        return True

    def _reject_proxy_header(self, reason: str) -> bool:
        # An eviction or a stop during the read has logged its own reason.
        if not self._closing:
            self._log.warning("load balancer %s: %s; closing", self._peer, reason)
            self._end(reason)
        return False

    def _use_proxy_header(self, header: ProxyHeader) -> None:
        if header.source is None:
            self._log.info(
                "PROXY header v%d %s carries no client address; using %s",
                header.version,
                header.command.name,
                self._peer,
            )
            return
        balancer = self._peer
        self._peer = _format_address(header.source)
        self._peer_host = header.source[0]
        self._peer_port = header.source[1]
        self._log.info(
            "client %s through load balancer %s (PROXY header v%d)",
            self._peer,
            balancer,
            header.version,
        )

    async def _client_handshake(self) -> bool:
        timeout = self._context.timeouts.handshake
        try:
            await self._client.start_tls(
                self._context.server_context, server_side=True, timeout=timeout
            )
        except (OSError, TimeoutError) as error:
            self._end(f"client TLS handshake failed: {describe_error(error)}")
            return False
        return True

    def _read_client_certificate(self) -> Subject | None:
        subject = peer_certificate_subject(self._client.extra("ssl_object"))
        self._certificate_subject = subject
        if subject is not None:
            dn = certificate_identity(subject, None)
            self._log.info("client certificate with subject %r", dn)
        return subject

    async def _client_loop(self) -> None:
        while not self._closing:
            data = await self._read_client()
            if data is None:
                await self._idle_timeout()
                return
            if self._closing:
                return
            self._bytes_from_client += len(data)
            await self._call(partial(self._session.receive_client, data))
            if not data:
                return

    async def _read_client(self) -> bytes | None:
        # NOTE: every read restarts the idle timer, so a client that trickles
        # one byte at a time can stay connected before login for hours; the
        # session limit bounds how many such connections there can be.
        try:
            async with asyncio.timeout(self._idle_seconds()) as deadline:
                self._read_deadline = deadline
                return await self._client.read()
        except TimeoutError:
            return None
        finally:
            self._read_deadline = None

    def _idle_seconds(self) -> float:
        timeouts = self._context.timeouts
        if self._session.state is ConnectionState.AUTHENTICATED:
            return timeouts.idle_authenticated
        return timeouts.idle_unauthenticated

    def _restart_idle_timer(self) -> None:
        # The login finishes in the upstream task while the client task
        # waits for the client, so the running wait gets the new limit.
        deadline = self._read_deadline
        if deadline is not None:
            deadline.reschedule(self._loop.time() + self._idle_seconds())

    async def _idle_timeout(self) -> None:
        authenticated = self._session.state is ConnectionState.AUTHENTICATED
        self._log.info(
            "client idle for too long (%s authentication); closing",
            "after" if authenticated else "before",
        )
        await self._say_goodbye(_GOODBYE_IDLE)
        self._end("idle timeout")

    async def _finish(self) -> None:
        self._end(self._end_reason or "connection ended")
        task = self._upstream_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        streams = [self._client]
        if self._upstream is not None:
            streams.append(self._upstream)
        await asyncio.gather(*(stream.wait_closed(FLUSH_TIMEOUT) for stream in streams))
        self._release_user_session()
        self._account()

    def _account(self) -> None:
        duration = self._loop.time() - self._opened_at
        credentials = self._credentials
        identity = self._session.identity if self._authenticated else None
        self._log.info(
            "closed: %s; %d bytes from client, %d bytes to client, %.1f s",
            self._end_reason,
            self._bytes_from_client,
            self._bytes_to_client,
            duration,
        )
        self._context.accounting.record(
            SessionRecord(
                connection=self.id,
                protocol=self._context.protocol,
                client=self._peer,
                vpn_user=credentials.vpn_user if credentials else None,
                mail_user=credentials.mail_user if credentials else None,
                identity=identity,
                methods=tuple(method.value for method in self._passed_methods),
                upstream=self._upstream_name,
                authenticated=self._authenticated,
                bytes_from_client=self._bytes_from_client,
                bytes_to_client=self._bytes_to_client,
                duration=round(duration, 3),
                end_reason=self._end_reason,
            )
        )

    # Requests from the listener ----------------------------------------

    def evict(self) -> None:
        """End the connection because the session limit needs room."""
        self._log.warning(
            "evicted in state %s: the limit of %s unauthenticated connections "
            "was reached",
            self._session.state.value,
            self._context.limit.limit,
        )
        self._spawn(
            self._goodbye_and_end(_GOODBYE_EVICTED, "evicted by the session limit")
        )

    def shutdown(self) -> None:
        """Start a graceful stop: end the session unless it is authenticated."""
        if self._session.state is ConnectionState.AUTHENTICATED:
            self._log.info("proxy stopping; the relay may drain")
            return
        self._spawn(self._goodbye_and_end(_GOODBYE_SHUTDOWN, "proxy stopped"))

    def abort(self, reason: str) -> None:
        """Close both sides now, for a stop whose drain time ran out."""
        self._end(reason)
        self._client.abort()
        if self._upstream is not None:
            self._upstream.abort()

    async def _goodbye_and_end(self, text: str, reason: str) -> None:
        await self._say_goodbye(text)
        self._end(reason)

    async def _say_goodbye(self, text: str) -> None:
        # Before the greeting the client has seen no protocol, so it gets
        # no protocol goodbye either.
        if self._started and not self._closing:
            await self._call(partial(self._session.shutdown, text))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)

    # Session calls and events -----------------------------------------

    async def _call(self, call: Callable[[], list[Event]]) -> None:
        if self._closing:
            return
        try:
            events = call()
        except MailProxyError as error:
            self._log.error("session error: %s", error)
            self._end(f"session error: {error}")
            return
        await self._act(events)

    async def _act(self, events: list[Event]) -> None:
        for event in events:
            match event:
                case SendToClient(data=data):
                    self._send_to_client(data)
                case SendToUpstream(data=data):
                    self._send_to_upstream(data)
                case ForwardData():
                    await self._forward(event)
                case StartTLS(side=side):
                    await self._start_tls(side)
                case CloseUpstream(reason=reason):
                    self._close_upstream(reason)
                case CloseConnection(reason=reason):
                    self._end(reason)
                    return
                case StateChanged():
                    self._state_changed(event)
                case AuthenticationRequired():
                    await self._authenticate(event)
                case UpstreamSelected():
                    await self._select_upstream(event)
                case _:
                    self._observe(event)

    def _send_to_client(self, data: bytes) -> None:
        self._bytes_to_client += len(data)
        self._client.write(data)

    def _send_to_upstream(self, data: bytes) -> None:
        if self._upstream is None:
            self._log.error("bytes for the upstream, but no upstream is connected")
            return
        self._upstream.write(data)

    async def _forward(self, event: ForwardData) -> None:
        if event.direction is Direction.TO_CLIENT:
            target: PeerStream | None = self._client
            self._bytes_to_client += len(event.data)
        else:
            target = self._upstream
        if target is None:
            self._end("relay without an upstream connection")
            return
        target.write(event.data)

        # The reading side waits here, so a peer that stops reading stops
        # the proxy from reading the other peer.
        if target.needs_drain():
            await target.drain()

    def _state_changed(self, event: StateChanged) -> None:
        self._log.info("state %s -> %s", event.old.value, event.new.value)
        limit = self._context.limit
        if self.id in limit:
            limit.transition(self.id, event.new)
        self._restart_idle_timer()
        if event.new is ConnectionState.AUTHENTICATED:
            self._authenticated = True
            self._cancel_login_timer()
        elif event.new is not ConnectionState.AUTHENTICATING:
            # A failed login or a close frees the user's session place.
            self._cancel_login_timer()
            self._release_user_session()

    def _observe(self, event: Event) -> None:
        match event:
            case CredentialsObserved(username=username, mechanism=mechanism):
                self._credentials = event.credentials
                self._passed_methods = []
                self._log.info("login as %r with %s", username, mechanism)
            case AuthenticationSucceeded(method=AuthMethod.CERTIFICATE):
                self._passed_methods.append(AuthMethod.CERTIFICATE)
                self._log.info(
                    "authentication passed: certificate, user name %r",
                    self._certificate_user(),
                )
            case AuthenticationSucceeded(method=method):
                self._passed_methods.append(method)
                self._log.info("authentication passed: %s", method.value)
            case AuthenticationFailed(method=method, reason=reason):
                self._log.warning(
                    "authentication failed (%s): %s; attempts left: %d",
                    # No method: the credentials, the policy or the server
                    # choice refused the login; the reason says which.
                    method.value if method is not None else "login",
                    reason,
                    event.attempts_left,
                )
            case ProtocolErrorObserved(side=side, message=message, fatal=fatal):
                # A client's bad command is routine and answered; only errors
                # that end the connection are worth a warning.
                self._log.log(
                    logging.WARNING if fatal else logging.INFO,
                    "protocol error from %s%s: %s",
                    side.value,
                    ", closing" if fatal else "",
                    message,
                )
            case _:
                self._log.debug("event %r", event)

    def _certificate_user(self) -> str | None:
        # The same derivation as the core's, which keeps its result private
        # until the upstream is selected.
        subject = self._certificate_subject
        if subject is None:
            return None
        attributes = self._context.settings.certificate_username
        return certificate_identity(subject, attributes)

    # TLS ------------------------------------------------------------------

    async def _start_tls(self, side: Side) -> None:
        stream = self._client if side is Side.CLIENT else self._upstream
        if stream is None:
            self._end("TLS requested for an upstream that is not connected")
            return
        stream.pause()
        leftover = stream.take_buffered()
        if leftover:
            await self._hand_over_early_bytes(side, leftover)
        if self._closing or (side is Side.UPSTREAM and stream is not self._upstream):
            return
        try:
            await self._handshake(side, stream)
        except (OSError, TimeoutError) as error:
            await self._handshake_failed(side, error)
            return
        subject = self._read_client_certificate() if side is Side.CLIENT else None
        await self._call(
            partial(self._session.tls_established, side, certificate_subject=subject)
        )

    async def _hand_over_early_bytes(self, side: Side, leftover: bytes) -> None:
        # Bytes that arrived before the handshake must never be read as if
        # they had come through TLS, so they go to the session in plain text.
        # It drops a client's bytes, and an upstream's fail the login.
        if side is Side.CLIENT:
            await self._call(partial(self._session.receive_client, leftover))
        else:
            await self._call(partial(self._session.receive_upstream, leftover))

    async def _handshake(self, side: Side, stream: PeerStream) -> None:
        if side is Side.CLIENT:
            await stream.start_tls(
                self._context.server_context,
                server_side=True,
                timeout=self._context.timeouts.handshake,
            )
            return
        server = self._selected_server()
        await stream.start_tls(
            self._upstream_context(server),
            server_side=False,
            server_hostname=server.host,
            timeout=max(self._login_deadline - self._loop.time(), 0.1),
        )

    async def _handshake_failed(self, side: Side, error: BaseException) -> None:
        reason = f"{side.value} TLS handshake failed: {describe_error(error)}"
        self._log.warning("%s", reason)
        if side is Side.CLIENT:
            self._end(reason)
        else:
            await self._call(partial(self._session.upstream_failed, reason))

    # AAA and piggyback ----------------------------------------------------

    async def _authenticate(self, event: AuthenticationRequired) -> None:
        result: AaaResult | PiggybackResult
        if event.method is AuthMethod.AAA:
            result = await self._check_aaa(event.credentials)
        elif event.method is AuthMethod.PIGGYBACK:
            result = await self._check_piggyback(event)
        else:
            reason = f"method {event.method.value} is not checked by this proxy"
            result = AaaResult(success=False, reason=reason)
        group = result.group if isinstance(result, AaaResult) else None
        if result.success and group is not None:
            self._log.info("AAA group policy %r", group)
        await self._call(
            partial(
                self._session.authentication_result,
                event.method,
                success=result.success,
                reason=result.reason,
                group=group,
            )
        )

    async def _check_piggyback(self, event: AuthenticationRequired) -> PiggybackResult:
        directory = self._context.piggyback
        if directory is None:
            reason = "no piggyback database configured"
            return PiggybackResult(success=False, reason=reason)
        if event.client_address is None:
            reason = "the client address is unknown"
            return PiggybackResult(success=False, reason=reason)
        try:
            return await directory.check(event.client_address, event.identity)
        except Exception as error:  # a back-end fault fails this login only
            self._log.exception("piggyback check of %s failed", directory.database)
            reason = f"piggyback check failed: {describe_error(error)}"
            return PiggybackResult(success=False, reason=reason)

    async def _check_aaa(self, credentials: SplitCredentials) -> AaaResult:
        group = self._context.aaa_group
        user, password = credentials.vpn_user, credentials.vpn_password
        if group is None:
            return AaaResult(success=False, reason="no AAA server group configured")
        if user is None or password is None:
            return AaaResult(success=False, reason="no VPN user name or password")
        timeout = self._context.timeouts.aaa
        try:
            async with asyncio.timeout(timeout):
                return await group.authenticate(user, password.reveal())
        except TimeoutError:
            reason = f"AAA server group {group.name} timed out after {timeout:g} s"
        except Exception as error:  # a back-end fault fails this login only
            self._log.exception("AAA server group %s failed", group.name)
            reason = f"AAA server group {group.name} failed: {describe_error(error)}"
        return AaaResult(success=False, reason=reason)

    # Upstream -------------------------------------------------------------

    async def _select_upstream(self, event: UpstreamSelected) -> None:
        policy = event.policy
        maximum = policy.max_sessions_per_user if policy is not None else None
        if not self._context.user_sessions.acquire(event.user, maximum):
            assert policy is not None
            reason = (
                f"user {event.user!r} already holds the {maximum} session(s) that "
                f"group policy {policy.name!r} allows"
            )
            await self._call(partial(self._session.reject_login, reason))
            return
        self._session_user = event.user
        await self._connect_upstream(event.server)

    def _release_user_session(self) -> None:
        user, self._session_user = self._session_user, None
        if user is not None:
            self._context.user_sessions.release(user)

    async def _connect_upstream(self, server: UpstreamServer) -> None:
        timeout = self._context.timeouts.upstream
        self._login_deadline = self._loop.time() + timeout
        self._upstream_name = server.name
        self._upstream_server = server
        try:
            async with asyncio.timeout(timeout):
                stream = await self._open_upstream(server)
        except (OSError, TimeoutError) as error:
            reason = (
                f"cannot connect to upstream {server.name}: {describe_error(error)}"
            )
            self._log.warning("%s (%s:%d)", reason, server.host, server.port)
            await self._call(partial(self._session.upstream_failed, reason))
            return
        if self._closing:
            stream.abort()
            return
        self._attach_upstream(stream, server)
        await self._call(self._session.upstream_connected)

    async def _open_upstream(self, server: UpstreamServer) -> PeerStream:
        implicit = server.tls is UpstreamTLS.IMPLICIT
        _, stream = await self._loop.create_connection(
            PeerStream,
            server.host,
            server.port,
            ssl=self._upstream_context(server) if implicit else None,
            server_hostname=server.host if implicit else None,
            ssl_handshake_timeout=self._context.timeouts.upstream if implicit else None,
        )
        return stream

    def _attach_upstream(self, stream: PeerStream, server: UpstreamServer) -> None:
        self._log.info(
            "connected to upstream %s (%s:%d)", server.name, server.host, server.port
        )
        self._upstream = stream
        self._upstream_task = asyncio.create_task(self._upstream_loop(stream))
        self._login_timer = self._loop.call_at(
            self._login_deadline, self._login_timed_out, stream
        )

    async def _upstream_loop(self, stream: PeerStream) -> None:
        while True:
            data = await stream.read()
            if stream is not self._upstream or self._closing:
                return
            await self._call(partial(self._session.receive_upstream, data))
            if not data:
                return

    def _login_timed_out(self, stream: PeerStream) -> None:
        self._login_timer = None
        if stream is not self._upstream:
            return
        if self._session.state is not ConnectionState.AUTHENTICATING:
            return
        timeout = self._context.timeouts.upstream
        reason = f"upstream login timed out after {timeout:g} s"
        self._log.warning("%s", reason)
        self._spawn(self._call(partial(self._session.upstream_failed, reason)))

    def _close_upstream(self, reason: str) -> None:
        stream, self._upstream = self._upstream, None
        task, self._upstream_task = self._upstream_task, None
        self._cancel_login_timer()
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if stream is not None:
            self._log.info("closing upstream: %s", reason)
            stream.close()
            self._spawn(stream.wait_closed(FLUSH_TIMEOUT))

    def _selected_server(self) -> UpstreamServer:
        server = self._upstream_server
        assert server is not None
        return server

    def _upstream_context(self, server: UpstreamServer) -> ssl.SSLContext:
        contexts = self._context.upstream_contexts
        # A host named through allow_any_server uses the "*" entry.
        return contexts.get(server.name) or contexts[ANY_SERVER]

    def _cancel_login_timer(self) -> None:
        timer, self._login_timer = self._login_timer, None
        if timer is not None:
            timer.cancel()

    # Close ----------------------------------------------------------------

    def _end(self, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        self._end_reason = reason
        self._cancel_login_timer()
        self._client.close()
        if self._upstream is not None:
            self._upstream.close()


def _peer_port(address: object) -> int | None:
    if isinstance(address, tuple) and len(address) >= 2:
        port = address[1]
        return port if isinstance(port, int) else None
    return None


def _format_address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)

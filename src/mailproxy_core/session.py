"""The per-connection session: two protocol machines and the auth flow.

A :class:`Session` owns the connection state, composes a client-facing
and an upstream-facing machine of one protocol, and runs the login: split
the credentials, ask the driver to check each configured method in the
order certificate, piggyback, aaa, select the upstream, let the upstream
machine log in (method ``mailhost``), then relay. Every protocol uses this
one flow; a protocol package only supplies its two machines.
"""

from __future__ import annotations

import abc
import ipaddress

from . import machine as m
from .authflow import AuthFlow, Check, Passed, Refused, Select, Subject
from .delimiters import split_credentials
from .errors import CredentialsError, LocalProtocolError
from .events import (
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
from .settings import AuthMethod, Limits, SessionSettings, UpstreamServer
from .states import ConnectionState, check_transition

_S = ConnectionState


class Session(abc.ABC):
    """One client connection of one protocol, from greeting to relay.

    Each method returns the events that follow from the call, in the order
    the driver must act on them. After a :class:`CloseConnection` event
    every further call returns ``[]``.

    :param settings: the listener's settings.
    """

    #: The protocol's limits, used when ``settings.limits`` is ``None``.
    DEFAULT_LIMITS: Limits = Limits()

    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings
        #: The limits in force for this session.
        self.limits = settings.limits or self.DEFAULT_LIMITS
        self._state = _S.UNAUTHENTICATED
        self._client = self._make_client_machine()
        self._upstream: m.UpstreamMachine | None = None
        self._started = False
        self._failures = 0
        self._login: m.LoginRequested | None = None
        self._flow: AuthFlow | None = None
        self._selected: UpstreamServer | None = None
        self._client_address: str | None = None
        self._client_port: int | None = None
        self._certificate_subject: Subject | None = None
        self._awaiting_tls: Side | None = None
        self._closed = False
        #: The AAA group of the user, as the last ``aaa`` result reported it.
        self.group: str | None = None
        #: The VPN identity of the authenticated user, once known.
        self.identity: str | None = None

    #: The listener name that group policies use for this protocol.
    PROTOCOL: str = ""

    @abc.abstractmethod
    def _make_client_machine(self) -> m.ClientMachine:
        """Create the protocol's client-facing machine."""

    @abc.abstractmethod
    def _make_upstream_machine(
        self,
        server: UpstreamServer,
        login: m.UpstreamLogin | None,
        *,
        client_address: m.ClientAddress | None,
    ) -> m.UpstreamMachine:
        """Create the protocol's upstream-facing machine.

        :param client_address: the address to tell the upstream, or
            ``None`` when the server does not forward it.
        """

    @property
    def state(self) -> ConnectionState:
        """The connection's current state."""
        return self._state

    @property
    def closed(self) -> bool:
        """Whether the session has returned a :class:`CloseConnection` event."""
        return self._closed

    @property
    def failed_logins(self) -> int:
        """How many logins have failed on this connection."""
        return self._failures

    # Driver calls -------------------------------------------------------

    def start(
        self,
        *,
        client_address: str | None = None,
        client_port: int | None = None,
        certificate_subject: Subject | None = None,
    ) -> list[Event]:
        """Return the greeting; call once, after the client's TLS handshake.

        :param client_address: the client's IP address, for ``piggyback``
            and for servers that forward it.
        :param client_port: the client's TCP port, for servers that forward
            the address, or ``None`` when unknown.
        :param certificate_subject: the subject of the client certificate
            that the driver verified, or ``None`` when there is none
            (:func:`~mailproxy_core.authflow.subject_from_ssl` converts
            Python's form).
        :raises LocalProtocolError: when called twice.
        """
        if self._started:
            raise LocalProtocolError("start() was already called")
        self._started = True
        self._client_address = client_address
        self._client_port = client_port
        self._certificate_subject = certificate_subject
        return [SendToClient(data=self._client.greeting())]

    def receive_client(self, data: bytes) -> list[Event]:
        """Consume bytes from the client; ``b""`` means it closed.

        Once authenticated, the bytes come back in a :class:`ForwardData`
        event as the very same object.
        """
        self._require_started()
        if self._closed:
            return []
        if not data:
            # NOTE: end of stream closes both sides at once, so a client that
            # half-closes after pipelining commands gets no replies to them.
            return self._close("client closed the connection")
        if self._state is _S.AUTHENTICATED:
            return [ForwardData(direction=Direction.TO_UPSTREAM, data=data)]
        if self._awaiting_tls is Side.CLIENT:
            # Clear-text bytes pipelined after STARTTLS could be injected by
            # an attacker, so they are dropped, as the machine drops those
            # that arrived together with the command.
            return []
        return self._run_client(self._client.receive(data))

    def receive_upstream(self, data: bytes) -> list[Event]:
        """Consume bytes from the upstream server; ``b""`` means it closed."""
        self._require_started()
        if self._closed:
            return []
        if self._state is _S.AUTHENTICATED:
            if not data:
                return self._close("upstream closed the connection")
            return [ForwardData(direction=Direction.TO_CLIENT, data=data)]
        upstream = self._upstream
        if upstream is None:
            raise LocalProtocolError("no upstream connection is open")
        if not data:
            return self._fail_login(
                AuthMethod.MAILHOST,
                "upstream closed during the login",
                unavailable=True,
            )
        if self._awaiting_tls is Side.UPSTREAM:
            # The same outcome as when these bytes come with the go-ahead.
            violation = m.Violation(
                message="upstream sent data after its STARTTLS go-ahead", fatal=True
            )
            return self._run_upstream([violation])
        return self._run_upstream(upstream.receive(data))

    def authentication_result(
        self,
        method: AuthMethod,
        *,
        success: bool,
        reason: str = "",
        group: str | None = None,
    ) -> list[Event]:
        """Report the driver's result for an :class:`AuthenticationRequired` event.

        :param method: the method that was checked.
        :param success: whether it passed.
        :param reason: why it failed, for the log.
        :param group: the user's group, when the AAA server returned one.
        :raises LocalProtocolError: when no check of ``method`` is pending.
        """
        if self._closed:
            return []
        flow = self._flow
        if flow is None or flow.awaiting is not method:
            raise LocalProtocolError(f"no {method.value} check is pending")
        if not success:
            return self._fail_login(method, reason or f"{method.value} check failed")
        flow.record_success(group)
        events: list[Event] = [AuthenticationSucceeded(method=method)]
        events.extend(self._next_step())
        return events

    def reject_login(self, reason: str) -> list[Event]:
        """Fail the login under way, for a check the driver makes itself.

        The driver may call it after :class:`UpstreamSelected` and before
        ``upstream_connected``, for instance when the user already holds
        as many sessions as the group policy allows.

        :raises LocalProtocolError: when no upstream was selected.
        """
        if self._closed:
            return []
        if self._selected is None or self._upstream is not None:
            raise LocalProtocolError("no login is waiting for an upstream connection")
        return self._fail_login(None, reason)

    def upstream_connected(self) -> list[Event]:
        """Report for an :class:`UpstreamSelected` event that the connection is up.

        :raises LocalProtocolError: when no upstream was selected.
        """
        if self._closed:
            return []
        server = self._selected
        if server is None or self._upstream is not None:
            raise LocalProtocolError("no upstream connection was requested")
        self._upstream = self._make_upstream_machine(
            server,
            self._upstream_login(),
            client_address=self._address_to_forward(server),
        )
        return []

    def upstream_failed(self, reason: str) -> list[Event]:
        """Report for an :class:`UpstreamSelected` event that connecting failed.

        :raises LocalProtocolError: when no upstream was selected.
        """
        if self._closed:
            return []
        if self._selected is None:
            raise LocalProtocolError("no upstream connection was requested")
        return self._fail_login(AuthMethod.MAILHOST, reason, unavailable=True)

    def tls_established(
        self, side: Side, *, certificate_subject: Subject | None = None
    ) -> list[Event]:
        """Continue after the handshake that a :class:`StartTLS` requested.

        :param certificate_subject: for the client side, the subject of the
            verified client certificate, if the client sent one.
        :raises LocalProtocolError: when no handshake on ``side`` is pending.
        """
        if self._closed:
            return []
        if self._awaiting_tls is not side:
            raise LocalProtocolError(
                f"no TLS handshake with the {side.value} is pending"
            )
        self._awaiting_tls = None
        if side is Side.CLIENT:
            self._certificate_subject = certificate_subject
            return self._run_client(self._client.tls_established())
        assert self._upstream is not None
        return self._run_upstream(self._upstream.tls_established())

    def shutdown(self, text: str = "Server shutting down") -> list[Event]:
        """End the session for a graceful stop, unless it is authenticated.

        :returns: the protocol's goodbye and a close before authentication;
            ``[]`` once authenticated, so the driver lets the relay drain.
        """
        if self._closed or self._state is _S.AUTHENTICATED:
            return []
        events: list[Event] = [SendToClient(data=self._client.goodbye(text))]
        events.extend(self._close("proxy is shutting down"))
        return events

    # Client side --------------------------------------------------------

    def _run_client(self, outputs: list[m.ClientOutput]) -> list[Event]:
        events: list[Event] = []
        for output in outputs:
            if isinstance(output, m.Reply):
                events.append(SendToClient(data=output.data))
            elif isinstance(output, m.LoginRequested):
                events.extend(self._begin_login(output))
            elif isinstance(output, m.TlsRequested):
                self._awaiting_tls = Side.CLIENT
                events.append(StartTLS(side=Side.CLIENT))
            elif isinstance(output, m.CloseRequested):
                events.extend(self._close(output.reason))
            elif isinstance(output, m.ChallengeAnswered):
                assert self._upstream is not None
                answer = self._upstream.challenge_answered(output.line)
                events.extend(self._run_upstream(answer))
            else:
                events.extend(self._report_violation(Side.CLIENT, output))
            if self._closed:
                break
        return events

    def _begin_login(self, login: m.LoginRequested) -> list[Event]:
        events = self._move_to(_S.AUTHENTICATING)
        self._login = login
        methods = self.settings.methods
        try:
            credentials = split_credentials(
                login.username,
                login.password,
                delimiters=self.settings.delimiters,
                servers=self.settings.servers.keys(),
                vpn_part=AuthMethod.AAA in methods,
                mail_part=AuthMethod.MAILHOST in methods,
                any_host=self.settings.any_server is not None,
            )
        except CredentialsError as error:
            events.extend(self._fail_login(None, error.reason))
            return events
        self._flow = AuthFlow(
            self.settings, self.PROTOCOL, credentials, self._certificate_subject
        )
        events.append(
            CredentialsObserved(
                username=login.username,
                credentials=credentials,
                mechanism=login.mechanism,
            )
        )
        events.extend(self._next_step())
        return events

    def _next_step(self) -> list[Event]:
        flow = self._flow
        assert flow is not None
        events: list[Event] = []
        step = flow.next_step()
        while isinstance(step, Passed):
            events.append(AuthenticationSucceeded(method=step.method))
            step = flow.next_step()
        if isinstance(step, Refused):
            events.extend(self._fail_login(step.method, step.reason))
        elif isinstance(step, Check):
            events.append(
                AuthenticationRequired(
                    method=step.method,
                    credentials=flow.credentials,
                    identity=flow.identity,
                    client_address=self._client_address,
                )
            )
        else:
            events.append(self._select(step))
        return events

    def _select(self, step: Select) -> Event:
        flow = self._flow
        assert flow is not None
        self._selected = step.server
        self.identity = flow.identity
        self.group = flow.group
        return UpstreamSelected(server=step.server, user=step.user, policy=step.policy)

    def _upstream_login(self) -> m.UpstreamLogin | None:
        if AuthMethod.MAILHOST not in self.settings.methods:
            return None
        login, flow = self._login, self._flow
        assert login is not None and flow is not None
        credentials = flow.credentials
        authzid = login.authzid if login.authzid != login.username else ""
        return m.UpstreamLogin(
            username=credentials.mail_user,
            secret=credentials.mail_password,
            authzid=authzid,
            mechanism=login.mechanism,
            is_token=login.is_token,
        )

    def _address_to_forward(self, server: UpstreamServer) -> m.ClientAddress | None:
        host = self._client_address
        if not server.forward_client_address or host is None:
            return None
        # Only an IP address goes upstream, so a machine can put it in a
        # command without escaping.
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return None
        return m.ClientAddress(host=host, port=self._client_port)

    # Upstream side ------------------------------------------------------

    def _run_upstream(self, outputs: list[m.UpstreamOutput]) -> list[Event]:
        events: list[Event] = []
        for output in outputs:
            if isinstance(output, m.Reply):
                events.append(SendToUpstream(data=output.data))
            elif isinstance(output, m.TlsRequested):
                self._awaiting_tls = Side.UPSTREAM
                events.append(StartTLS(side=Side.UPSTREAM))
            elif isinstance(output, m.LoginSucceeded):
                events.extend(self._finish_login(output.reply))
            elif isinstance(output, m.ChallengeForClient):
                relayed = self._client.relay_challenge(output.data)
                events.extend(self._run_client(relayed))
            elif isinstance(output, m.LoginFailed):
                events.extend(
                    self._fail_login(
                        AuthMethod.MAILHOST,
                        output.reason,
                        output.reply,
                        unavailable=output.unavailable,
                    )
                )
            else:
                events.extend(self._report_violation(Side.UPSTREAM, output))
                if output.fatal and not self._closed:
                    events.extend(
                        self._fail_login(
                            AuthMethod.MAILHOST, output.message, unavailable=True
                        )
                    )
            if self._closed or self._state is not _S.AUTHENTICATING:
                break
        return events

    def _finish_login(self, reply: m.UpstreamReply) -> list[Event]:
        upstream = self._upstream
        assert upstream is not None
        events: list[Event] = []
        if AuthMethod.MAILHOST in self.settings.methods:
            events.append(AuthenticationSucceeded(method=AuthMethod.MAILHOST))
        events.append(SendToClient(data=self._client.login_succeeded(reply)))
        events.extend(self._move_to(_S.AUTHENTICATED))
        # Bytes that arrived on either side before the login finished are
        # relay data too; they are copies, since they were buffered.
        held = self._client.take_held()
        if held:
            events.append(ForwardData(direction=Direction.TO_UPSTREAM, data=held))
        remaining = upstream.take_remaining()
        if remaining:
            events.append(ForwardData(direction=Direction.TO_CLIENT, data=remaining))
        return events

    # Failure and close --------------------------------------------------

    def _fail_login(
        self,
        method: AuthMethod | None,
        reason: str,
        reply: m.UpstreamReply | None = None,
        *,
        unavailable: bool = False,
    ) -> list[Event]:
        self._failures += 1
        attempts_left = max(self.settings.max_auth_attempts - self._failures, 0)
        failure = self._client.login_failed(reply, unavailable=unavailable)
        events: list[Event] = [
            SendToClient(data=failure),
            AuthenticationFailed(
                method=method, reason=reason, attempts_left=attempts_left
            ),
        ]
        events.extend(self._reset_login())
        events.extend(self._move_to(_S.UNAUTHENTICATED))
        if attempts_left == 0:
            goodbye = self._client.goodbye("Too many failed logins")
            events.append(SendToClient(data=goodbye))
            events.extend(self._close("too many failed logins"))
            return events
        events.extend(self._run_client(self._client.resume()))
        return events

    def _reset_login(self) -> list[Event]:
        events: list[Event] = []
        if self._upstream is not None:
            events.append(CloseUpstream(reason="upstream login ended without success"))
        self._upstream = None
        self._selected = None
        self._awaiting_tls = None
        self._login = None
        self._flow = None
        return events

    def _report_violation(self, side: Side, violation: m.Violation) -> list[Event]:
        events: list[Event] = [
            ProtocolErrorObserved(
                side=side, message=violation.message, fatal=violation.fatal
            )
        ]
        if violation.fatal and side is Side.CLIENT:
            events.extend(self._close(violation.message))
        return events

    def _close(self, reason: str) -> list[Event]:
        events = self._move_to(_S.CLOSED)
        self._closed = True
        events.append(CloseConnection(reason=reason))
        return events

    def _move_to(self, new: ConnectionState) -> list[Event]:
        old = self._state
        if old is new:
            return []
        check_transition(old, new)
        self._state = new
        return [StateChanged(old=old, new=new)]

    def _require_started(self) -> None:
        if not self._started:
            raise LocalProtocolError("call start() before feeding data")

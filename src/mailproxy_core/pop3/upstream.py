"""The upstream-facing POP3 machine: greeting, STLS, CAPA, login.

The proxy acts as a POP3 client here. It reads the greeting (an angle
bracket text in it is an APOP timestamp or just text, and is ignored
either way), upgrades with STLS when configured so, asks for CAPA, and
logs in with USER and PASS, or with AUTH PLAIN when the server offers no
USER or an authorization identity must pass. Given the client's address
and a server that lists XCLIENT in CAPA, it sends the address first. The
server's final status line, response code included (RFC 2449 section 8,
RFC 3206), goes back to the client as it is.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import Final

from ..framing import LineBuffer, LineTooLongError
from ..machine import (
    ChallengeForClient,
    ClientAddress,
    LoginFailed,
    LoginSucceeded,
    Reply,
    TlsRequested,
    UpstreamLogin,
    UpstreamMachine,
    UpstreamOutput,
    UpstreamReply,
    Violation,
)
from ..sasl import encode_base64
from ..settings import UpstreamServer, UpstreamTLS

#: Longest response line accepted from an upstream: RFC 2449 section 4
#: allows 512 octets, and a little more tolerates loose servers.
MAX_UPSTREAM_LINE: Final = 1024

#: Longest AUTH command with an initial response that is sent in one line;
#: RFC 5034 section 4 keeps commands within 255 octets, CRLF included.
MAX_AUTH_LINE: Final = 255

#: CAPA lines accepted before the terminating dot.
MAX_CAPA_LINES: Final = 100


class _Stage(Enum):
    GREETING = auto()
    STLS = auto()
    HANDSHAKE = auto()
    CAPA = auto()
    CAPA_LIST = auto()
    XCLIENT = auto()
    USER = auto()
    PASS = auto()
    AUTH = auto()
    DONE = auto()


class PopUpstreamMachine(UpstreamMachine):
    """The proxy's client side toward an upstream POP3 server.

    :param server: the upstream being logged in to.
    :param login: the mail credentials; POP3 always logs in upstream.
    :param client_address: the client's address to send with XCLIENT
        before the login, when the server lists XCLIENT in CAPA.
    """

    def __init__(
        self,
        server: UpstreamServer,
        login: UpstreamLogin | None,
        *,
        client_address: ClientAddress | None = None,
    ) -> None:
        super().__init__(server, login, client_address=client_address)
        self._buffer = LineBuffer(max_line=MAX_UPSTREAM_LINE)
        self._stage = _Stage.GREETING
        self._tls_done = server.tls is not UpstreamTLS.STARTTLS
        self._capabilities: set[bytes] = set()
        self._sasl_mechanisms: set[bytes] = set()
        self._pending_response: bytes | None = None
        self._xclient_done = client_address is None

    def receive(self, data: bytes) -> list[UpstreamOutput]:
        self._buffer.feed(data)
        outputs: list[UpstreamOutput] = []
        while self._stage not in (_Stage.DONE, _Stage.HANDSHAKE):
            try:
                line = self._buffer.next_line()
            except LineTooLongError as error:
                return [*outputs, Violation(message=str(error), fatal=True)]
            if line is None:
                break
            outputs.extend(self._handle(line))
            if any(isinstance(o, (LoginFailed, Violation)) for o in outputs):
                break
        if self._stage is _Stage.HANDSHAKE and len(self._buffer):
            return self._refuse_early_bytes(outputs)
        return outputs

    def tls_established(self) -> list[UpstreamOutput]:
        self._tls_done = True
        return self._request_capabilities()

    def take_remaining(self) -> bytes:
        return self._buffer.take_all()

    # Responses -------------------------------------------------------------

    def _handle(self, line: bytes) -> list[UpstreamOutput]:
        if self._stage is _Stage.CAPA_LIST:
            return self._capa_line(line)
        ok = line.startswith(b"+OK")
        if self._stage is _Stage.GREETING:
            return self._greeting(ok)
        if self._stage is _Stage.STLS:
            if not ok:
                return [LoginFailed(reason="upstream refused STLS", unavailable=True)]
            self._stage = _Stage.HANDSHAKE
            return [TlsRequested()]
        if self._stage is _Stage.CAPA:
            # A server without CAPA answers -ERR; RFC 1939 USER still works.
            if ok:
                self._stage = _Stage.CAPA_LIST
                return []
            self._capabilities = {b"USER"}
            return self._send_login()
        if self._stage is _Stage.XCLIENT:
            # A rejected XCLIENT only costs the address in the server's log.
            return self._send_login()
        # RFC 5034 section 4: a continuation is "+" and a space or nothing.
        if self._stage is _Stage.AUTH and (line == b"+" or line.startswith(b"+ ")):
            return self._continuation(line[2:])
        return self._login_reply(ok, line)

    def _greeting(self, ok: bool) -> list[UpstreamOutput]:
        if not ok:
            return [
                LoginFailed(reason="upstream refused the connection", unavailable=True)
            ]
        if not self._tls_done:
            self._stage = _Stage.STLS
            return [Reply(data=b"STLS\r\n")]
        return self._request_capabilities()

    def _request_capabilities(self) -> list[UpstreamOutput]:
        self._stage = _Stage.CAPA
        self._capabilities = set()
        self._sasl_mechanisms = set()
        return [Reply(data=b"CAPA\r\n")]

    def _capa_line(self, line: bytes) -> list[UpstreamOutput]:
        if line == b".":
            return self._send_login()
        if len(self._capabilities) >= MAX_CAPA_LINES:
            return [Violation(message="upstream CAPA list is too long", fatal=True)]
        # A dot-stuffed line starts with "..", which no capability name does.
        words = line.upper().split()
        if words:
            self._capabilities.add(words[0])
            if words[0] == b"SASL":
                self._sasl_mechanisms.update(words[1:])
        return []

    # Login -----------------------------------------------------------------

    def _send_login(self) -> list[UpstreamOutput]:
        address = self.client_address
        if not self._xclient_done and address is not None:
            self._xclient_done = True
            if b"XCLIENT" in self._capabilities:
                return self._send_xclient(address)
        login = self.login
        if login is None:
            self._stage = _Stage.DONE
            return [LoginSucceeded(reply=UpstreamReply(text=b"+OK Logged in"))]
        wants_sasl = login.is_token or bool(login.authzid)
        if wants_sasl or b"USER" not in self._capabilities:
            return self._authenticate(login)
        self._stage = _Stage.USER
        return [Reply(data=b"USER " + login.username.encode() + b"\r\n")]

    def _send_xclient(self, address: ClientAddress) -> list[UpstreamOutput]:
        # Dovecot's POP3 command for proxies in login_trusted_networks
        # (Dovecot 2.3 "Forwarding parameters"): ADDR and PORT, unquoted.
        command = b"XCLIENT ADDR=" + address.host.encode()
        if address.port is not None:
            command += b" PORT=%d" % address.port
        self._stage = _Stage.XCLIENT
        return [Reply(data=command + b"\r\n")]

    def _authenticate(self, login: UpstreamLogin) -> list[UpstreamOutput]:
        mechanism = login.sasl_mechanism()
        if mechanism.encode() not in self._sasl_mechanisms:
            reason = f"upstream does not offer AUTH {mechanism}"
            return [LoginFailed(reason=reason, unavailable=True)]
        message = login.sasl_message()
        response = encode_base64(message) or b"="
        self._stage = _Stage.AUTH
        command = b"AUTH " + mechanism.encode()
        if len(command) + 1 + len(response) + 2 <= MAX_AUTH_LINE:
            return [Reply(data=command + b" " + response + b"\r\n")]
        self._pending_response = response
        return [Reply(data=command + b"\r\n")]

    def _continuation(self, data: bytes) -> list[UpstreamOutput]:
        response, self._pending_response = self._pending_response, None
        if response is not None:
            return [Reply(data=response + b"\r\n")]
        login = self.login
        if login is not None and login.is_token:
            # A token exchange ends with an error challenge that the client
            # must answer before the server's -ERR (RFC 7628 section 3.2.2).
            return [ChallengeForClient(data=data)]
        return [Reply(data=b"*\r\n")]

    def _login_reply(self, ok: bool, line: bytes) -> list[UpstreamOutput]:
        login = self.login
        assert login is not None
        if not ok:
            self._stage = _Stage.DONE
            reply = UpstreamReply(text=line)
            return [LoginFailed(reason="upstream rejected the mail login", reply=reply)]
        if self._stage is _Stage.USER:
            self._stage = _Stage.PASS
            return [Reply(data=b"PASS " + login.secret.reveal().encode() + b"\r\n")]
        self._stage = _Stage.DONE
        return [LoginSucceeded(reply=UpstreamReply(text=line))]

"""Tests of the ``radius`` AAA server group against a scripted UDP server.

The server on 127.0.0.1 decodes each Access-Request with pyrad and sends
replies that a test builds, so that forged, unsigned and tampered replies
can be tried, which a real RADIUS server never sends.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from pyrad import packet

from mailproxy_core.errors import ConfigurationError
from mailproxy_core.proxy.aaa import AaaResult
from mailproxy_core.proxy.radiusgroup import (
    RadiusAaaGroup,
    check_credentials,
    load_dictionary,
    parse_class_group,
)

SECRET = "unit-test-secret"
HOST = "127.0.0.1"
DICTIONARY = load_dictionary()

#: Builds the datagrams that reply to the Nth request (counting from 1).
Responder = Callable[[Any, int], list[bytes]]


@dataclass
class ScriptedServer(asyncio.DatagramProtocol):
    """A UDP server that sends the replies that ``respond`` builds."""

    respond: Responder
    requests: list[Any] = field(default_factory=list)
    raw_requests: list[bytes] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None
    #: Another socket to send the replies from, so their source port is
    #: not the one that the client sent to.
    sender: asyncio.DatagramTransport | None = None

    replies_sent: int = 0
    errors: list[Exception] = field(default_factory=list)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # asyncio only logs an exception raised here, so keep it for the
        # test to raise.
        try:
            self._answer(data, addr)
        except Exception as error:
            self.errors.append(error)

    def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        request = packet.AuthPacket(
            packet=data, secret=SECRET.encode(), dict=DICTIONARY
        )
        self.requests.append(request)
        self.raw_requests.append(data)
        transport = self.sender or self.transport
        assert transport is not None
        for reply in self.respond(request, len(self.requests)):
            transport.sendto(reply, addr)
            self.replies_sent += 1


def reply_bytes(
    request: Any,
    code: int = packet.AccessAccept,
    *,
    secret: str = SECRET,
    message_authenticator: bool = True,
    **attributes: Any,
) -> bytes:
    """Encode a reply to ``request`` signed with ``secret``."""
    reply = request.CreateReply(message_authenticator=message_authenticator)
    reply.code = code
    reply.secret = secret.encode()
    for name, value in attributes.items():
        reply[name.replace("_", "-")] = value
    data: bytes = reply.ReplyPacket()
    return data


def resign(data: bytes, request: Any) -> bytes:
    """Recompute the Response Authenticator of ``data`` (RFC 2865 section 3)."""
    digest = hashlib.md5(
        data[:4] + request.authenticator + data[20:] + SECRET.encode()
    ).digest()
    return data[:4] + digest + data[20:]


def tamper_message_authenticator(data: bytes, request: Any) -> bytes:
    """Flip a bit of the Message-Authenticator and fix the Response Authenticator."""
    position = 20
    while data[position] != 80:
        position += data[position + 1]
    value = position + 2
    tampered = data[:value] + bytes([data[value] ^ 1]) + data[value + 1 :]
    return resign(tampered, request)


def run_login(
    respond: Responder,
    user: str = "vpnuser",
    password: str = "vpnpass",
    *,
    reply_from_other_port: bool = False,
    **overrides: Any,
) -> tuple[AaaResult, ScriptedServer]:
    """Run one login against a scripted server on a free port."""

    async def scenario() -> tuple[AaaResult, ScriptedServer]:
        loop = asyncio.get_running_loop()
        transport, server = await loop.create_datagram_endpoint(
            lambda: ScriptedServer(respond), local_addr=(HOST, 0)
        )
        if reply_from_other_port:
            server.sender, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=(HOST, 0)
            )
        try:
            port = transport.get_extra_info("sockname")[1]
            settings: dict[str, Any] = {
                "host": HOST,
                "port": port,
                "secret": SECRET,
                "timeout": 0.6,
                "retries": 2,
            }
            settings.update(overrides)
            group = RadiusAaaGroup("radius", **settings)
            result = await group.authenticate(user, password)
        finally:
            transport.close()
            if server.sender is not None:
                server.sender.close()
        if server.errors:
            raise server.errors[0]
        return result, server

    return asyncio.run(scenario())


def accept(request: Any, number: int) -> list[bytes]:
    return [reply_bytes(request, Class=b"OU=eng;")]


def test_valid_accept_gives_group() -> None:
    result, server = run_login(accept)
    assert result.success, result.reason
    assert result.group == "eng"
    assert len(server.requests) == 1


def test_request_attributes() -> None:
    _, server = run_login(accept)
    request = server.requests[0]
    assert request.code == packet.AccessRequest
    assert request["User-Name"] == ["vpnuser"]
    assert request["NAS-Identifier"] == ["mailproxy"]
    assert request.PwDecrypt(request[2][0]) == "vpnpass"


def test_request_message_authenticator_valid() -> None:
    _, server = run_login(accept)
    request = server.requests[0]
    # pyrad puts it first, which its documentation gives as a BlastRADIUS
    # countermeasure.
    assert next(iter(request.keys())) == "Message-Authenticator"
    assert request.verify_message_authenticator()


def test_password_not_in_request_bytes() -> None:
    _, server = run_login(accept)
    assert b"vpnpass" not in server.raw_requests[0]


def test_custom_nas_identifier() -> None:
    _, server = run_login(accept, nas_identifier="edge-1")
    assert server.requests[0]["NAS-Identifier"] == ["edge-1"]


def test_reject() -> None:
    def reject(request: Any, number: int) -> list[bytes]:
        return [reply_bytes(request, packet.AccessReject, Reply_Message="no")]

    result, _ = run_login(reject)
    assert not result.success
    assert result.reason == "rejected by RADIUS server"


def test_access_challenge_fails() -> None:
    def challenge(request: Any, number: int) -> list[bytes]:
        return [reply_bytes(request, packet.AccessChallenge, State=b"s1")]

    result, _ = run_login(challenge)
    assert not result.success
    assert (
        result.reason == "RADIUS server sent Access-Challenge, which is not supported"
    )


def test_unsigned_accept_dropped() -> None:
    def unsigned(request: Any, number: int) -> list[bytes]:
        return [reply_bytes(request, message_authenticator=False)]

    result, server = run_login(unsigned)
    assert not result.success
    assert result.reason == "RADIUS server did not answer"
    assert server.replies_sent > 0
    # The request was sent once and resent twice.
    assert len(server.requests) == 3


def test_unsigned_accept_allowed_when_not_required() -> None:
    def unsigned(request: Any, number: int) -> list[bytes]:
        return [reply_bytes(request, message_authenticator=False, Class=b"OU=x;")]

    result, _ = run_login(unsigned, require_message_authenticator=False)
    assert result.success, result.reason
    assert result.group == "x"


def test_accept_signed_with_other_secret_dropped() -> None:
    def forged(request: Any, number: int) -> list[bytes]:
        return [reply_bytes(request, secret="attacker-guess-1")]

    result, server = run_login(forged)
    assert not result.success
    assert result.reason == "RADIUS server did not answer"
    assert server.replies_sent > 0


@pytest.mark.parametrize("required", [True, False])
def test_tampered_message_authenticator_dropped(required: bool) -> None:
    def tampered(request: Any, number: int) -> list[bytes]:
        return [tamper_message_authenticator(reply_bytes(request), request)]

    result, server = run_login(tampered, require_message_authenticator=required)
    assert not result.success
    assert result.reason == "RADIUS server did not answer"
    assert server.replies_sent > 0


def test_resign_matches_server_signature() -> None:
    # Guards the test above: resign computes the Response Authenticator as
    # a server does, so only the Message-Authenticator is wrong there.
    request = packet.AuthPacket(
        secret=SECRET.encode(), dict=DICTIONARY, message_authenticator=True
    )
    request.RequestPacket()
    valid = reply_bytes(request, Class=b"OU=eng;")
    assert resign(valid, request) == valid


def test_wrong_identifier_dropped() -> None:
    def other_id(request: Any, number: int) -> list[bytes]:
        data = bytearray(reply_bytes(request))
        data[1] = (data[1] + 1) % 256
        return [bytes(data)]

    result, server = run_login(other_id)
    assert result.reason == "RADIUS server did not answer"
    assert server.replies_sent > 0


def test_unexpected_proxy_state_dropped() -> None:
    def injected(request: Any, number: int) -> list[bytes]:
        return [reply_bytes(request, Proxy_State=b"injected")]

    result, server = run_login(injected)
    assert result.reason == "RADIUS server did not answer"
    assert server.replies_sent > 0


def test_garbage_before_valid_reply() -> None:
    def garbage_first(request: Any, number: int) -> list[bytes]:
        valid = reply_bytes(request, Class=b"OU=eng;")
        return [b"", b"\x02", b"\xff" * 30, valid[:25], valid]

    result, _ = run_login(garbage_first)
    assert result.success, result.reason
    assert result.group == "eng"


def test_reply_to_resent_request() -> None:
    def second_only(request: Any, number: int) -> list[bytes]:
        return accept(request, number) if number == 2 else []

    result, server = run_login(second_only)
    assert result.success, result.reason
    assert len(server.requests) == 2
    # A resent request is the same datagram (RFC 2865 section 2.5).
    assert server.raw_requests[0] == server.raw_requests[1]


def test_no_resend_with_zero_retries() -> None:
    def second_only(request: Any, number: int) -> list[bytes]:
        return accept(request, number) if number == 2 else []

    result, server = run_login(second_only, retries=0)
    assert result.reason == "RADIUS server did not answer"
    assert len(server.requests) == 1


def test_reply_from_other_port_dropped() -> None:
    result, server = run_login(accept, reply_from_other_port=True)
    assert result.reason == "RADIUS server did not answer"
    assert server.replies_sent > 0
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([b"OU=staff;"], "staff"),
        ([b"OU=staff"], "staff"),
        ([b"ou=Staff;"], "Staff"),
        ([b" OU= staff ;"], "staff"),
        ([b"OU=a;OU=b;"], "a"),
        ([b"session-42", b"OU=eng;"], "eng"),
        ([b"\xff\xfe", b"OU=eng;"], "eng"),
        ([b"OU=;"], None),
        ([b"OU="], None),
        ([b"session-42"], None),
        ([], None),
    ],
)
def test_parse_class_group(values: list[bytes], expected: str | None) -> None:
    assert parse_class_group(values) == expected


@pytest.mark.parametrize(
    ("user", "password", "reason"),
    [
        ("", "pw", "empty user name"),
        ("vpn\x00user", "pw", "user name contains NUL, CR or LF"),
        ("vpnuser\r", "pw", "user name contains NUL, CR or LF"),
        ("vpn\nuser", "pw", "user name contains NUL, CR or LF"),
        ("u" * 254, "pw", "user name is longer than 253 bytes"),
        ("ü" * 127, "pw", "user name is longer than 253 bytes"),
        ("vpnuser", "", "empty password"),
        ("vpnuser", "pass\x00word", "password contains NUL"),
        ("vpnuser", "p" * 129, "password is longer than 128 bytes"),
    ],
)
def test_check_credentials_rejects(user: str, password: str, reason: str) -> None:
    assert check_credentials(user, password) == reason


def test_check_credentials_accepts_limits() -> None:
    assert check_credentials("u" * 253, "p" * 128) is None


def test_rejected_credentials_send_nothing() -> None:
    result, server = run_login(accept, password="")
    assert result.reason == "empty password"
    assert server.requests == []


def test_longest_password_accepted() -> None:
    result, server = run_login(accept, password="p" * 128)
    assert result.success, result.reason
    request = server.requests[0]
    assert request.PwDecrypt(request[2][0]) == "p" * 128


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"host": ""}, "host"),
        ({"host": "radius server"}, "host"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"retries": -1}, "retries"),
        ({"retries": 11}, "retries"),
        ({"secret": ""}, "secret"),
        ({"nas_identifier": ""}, "nas_identifier"),
        ({"dictionary": "/nonexistent/radius.dictionary"}, "dictionary"),
    ],
)
def test_invalid_settings(overrides: dict[str, Any], key: str) -> None:
    settings: dict[str, Any] = {"host": HOST, "secret": SECRET}
    settings.update(overrides)
    with pytest.raises(ConfigurationError, match=f"^{key}: "):
        RadiusAaaGroup("radius", **settings)


def test_dictionary_without_class(tmp_path: Path) -> None:
    path = tmp_path / "dictionary"
    path.write_text(
        "ATTRIBUTE User-Name 1 string\n"
        "ATTRIBUTE User-Password 2 string encrypt=1\n"
        "ATTRIBUTE NAS-Identifier 32 string\n"
    )
    with pytest.raises(ConfigurationError, match="does not define Class"):
        load_dictionary(path)


def test_shipped_dictionary_codes() -> None:
    codes = {
        "User-Name": 1,
        "User-Password": 2,
        "Reply-Message": 18,
        "Class": 25,
        "NAS-Identifier": 32,
        "Proxy-State": 33,
        "Message-Authenticator": 80,
    }
    for name, code in codes.items():
        assert DICTIONARY[name].code == code, name
    assert DICTIONARY["User-Password"].encrypt == 1


def test_short_secret_warns(caplog: pytest.LogCaptureFixture) -> None:
    RadiusAaaGroup("radius", host=HOST, secret="tiny-key")
    assert "has 8 bytes; RFC 2865 recommends at least 16" in caplog.text
    assert "tiny-key" not in caplog.text

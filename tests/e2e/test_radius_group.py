"""End-to-end tests of the ``radius`` AAA server group against FreeRADIUS."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import pytest
from pyrad import packet

from mailproxy_core.proxy.aaa import AaaResult
from mailproxy_core.proxy.radiusgroup import RadiusAaaGroup, load_dictionary

from .radiusserver import HOST, RadiusServer, pick_free_udp_port

pytestmark = pytest.mark.e2e

#: Seconds that FreeRADIUS may take to write a log line after its reply.
LOG_TIMEOUT = 5.0


def make_group(freeradius: RadiusServer, **overrides: Any) -> RadiusAaaGroup:
    settings: dict[str, Any] = {
        "host": freeradius.host,
        "port": freeradius.port,
        "secret": freeradius.secret,
    }
    settings.update(overrides)
    return RadiusAaaGroup("radius", **settings)


def login(group: RadiusAaaGroup, user: str, password: str) -> AaaResult:
    return asyncio.run(group.authenticate(user, password))


def auth_lines(freeradius: RadiusServer) -> list[str]:
    """Return the log lines of every accept and reject so far."""
    lines = freeradius.read_log().splitlines()
    return [line for line in lines if "Login OK" in line or "Login incorrect" in line]


def wait_for_log(freeradius: RadiusServer, text: str, start: int) -> list[str]:
    """Wait until a log line after the first ``start`` lines contains ``text``.

    :returns: The log lines after the first ``start``.
    """
    deadline = time.monotonic() + LOG_TIMEOUT
    while True:
        lines = freeradius.read_log().splitlines()[start:]
        if any(text in line for line in lines):
            return lines
        if time.monotonic() > deadline:
            pytest.fail(f"FreeRADIUS logged no {text!r} within {LOG_TIMEOUT} s")
        time.sleep(0.05)


def log_length(freeradius: RadiusServer) -> int:
    return len(freeradius.read_log().splitlines())


def test_accept_with_class_group(freeradius: RadiusServer) -> None:
    result = login(make_group(freeradius), "vpnuser", "vpnpass")
    assert result.success, result.reason
    assert result.group == "staff"


def test_accept_without_class(freeradius: RadiusServer) -> None:
    result = login(make_group(freeradius), "plainuser", "plainpass")
    assert result.success, result.reason
    assert result.group is None


def test_accept_with_other_class_form(freeradius: RadiusServer) -> None:
    result = login(make_group(freeradius), "opaqueuser", "opaquepass")
    assert result.success, result.reason
    assert result.group is None


def test_wrong_password_rejected(freeradius: RadiusServer) -> None:
    result = login(make_group(freeradius), "vpnuser", "wrong")
    assert not result.success
    assert result.reason == "rejected by RADIUS server"


def test_unknown_user_rejected(freeradius: RadiusServer) -> None:
    result = login(make_group(freeradius), "nobody", "vpnpass")
    assert not result.success
    assert result.reason == "rejected by RADIUS server"


def test_empty_password_sends_no_request(freeradius: RadiusServer) -> None:
    group = make_group(freeradius)
    before = len(auth_lines(freeradius))

    result = login(group, "vpnuser", "")
    assert not result.success
    assert result.reason == "empty password"

    # The next accept or reject in the log is that of a later login, so
    # the empty password caused no request.
    assert login(group, "plainuser", "plainpass").success
    deadline = time.monotonic() + LOG_TIMEOUT
    while len(auth_lines(freeradius)) <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    new_lines = auth_lines(freeradius)[before:]
    assert len(new_lines) == 1
    assert "[plainuser]" in new_lines[0]


def test_empty_password_contacts_no_server() -> None:
    group = RadiusAaaGroup(
        "radius", host=HOST, port=pick_free_udp_port(), secret="s" * 16, timeout=5
    )
    started = time.monotonic()
    result = login(group, "vpnuser", "")
    assert result.reason == "empty password"
    assert time.monotonic() - started < 1.0


def test_wrong_shared_secret_fails(freeradius: RadiusServer) -> None:
    start = log_length(freeradius)
    group = make_group(freeradius, secret="not-the-shared-secret", timeout=1.0)

    result = login(group, "vpnuser", "vpnpass")
    assert not result.success
    assert result.reason == "RADIUS server did not answer"

    # FreeRADIUS drops the request because its Message-Authenticator,
    # computed with the wrong secret, does not verify.
    lines = wait_for_log(freeradius, "invalid Message-Authenticator", start)
    assert not any("Login OK" in line for line in lines)


def test_no_server_times_out() -> None:
    group = RadiusAaaGroup(
        "radius",
        host=HOST,
        port=pick_free_udp_port(),
        secret="radius-test-key1",
        timeout=0.6,
        retries=2,
    )
    started = time.monotonic()
    result = login(group, "vpnuser", "vpnpass")
    elapsed = time.monotonic() - started
    assert not result.success
    assert result.reason == "RADIUS server did not answer"
    assert 0.5 < elapsed < 2.0


def send_raw_request(
    freeradius: RadiusServer, *, message_authenticator: bool
) -> bytes | None:
    """Send an Access-Request for vpnuser from a plain socket.

    :returns: The reply datagram, or ``None`` when none came within 1 s.
    """
    request = packet.AuthPacket(
        code=packet.AccessRequest,
        secret=freeradius.secret.encode(),
        dict=load_dictionary(),
        message_authenticator=message_authenticator,
    )
    request["User-Name"] = "vpnuser"
    request["User-Password"] = request.PwCrypt("vpnpass")

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        sock.sendto(request.RequestPacket(), (freeradius.host, freeradius.port))
        try:
            return sock.recv(4096)
        except TimeoutError:
            return None


def test_server_requires_message_authenticator(freeradius: RadiusServer) -> None:
    # FreeRADIUS drops the request without a Message-Authenticator, so the
    # accepts in the other tests prove that the group sends a valid one.
    assert send_raw_request(freeradius, message_authenticator=False) is None

    reply = send_raw_request(freeradius, message_authenticator=True)
    assert reply is not None
    assert reply[0] == packet.AccessAccept


def test_retries_zero_still_answers(freeradius: RadiusServer) -> None:
    result = login(make_group(freeradius, retries=0), "vpnuser", "vpnpass")
    assert result.success, result.reason


def test_password_not_in_logs(
    freeradius: RadiusServer, caplog: pytest.LogCaptureFixture
) -> None:
    group = make_group(freeradius)
    with caplog.at_level(logging.DEBUG):
        login(group, "vpnuser", "secret-guess-1")
        login(group, "vpnuser", "vpnpass")
        login(make_group(freeradius, timeout=0.3), "vpnuser", "")
    assert "secret-guess-1" not in caplog.text
    assert "vpnpass" not in caplog.text
    assert freeradius.secret not in caplog.text
    assert "secret-guess-1" not in freeradius.read_log()


def test_concurrent_logins(freeradius: RadiusServer) -> None:
    group = make_group(freeradius)

    async def run() -> list[AaaResult]:
        logins = [group.authenticate("vpnuser", "vpnpass") for _ in range(10)]
        logins += [group.authenticate("plainuser", "plainpass") for _ in range(10)]
        return await asyncio.gather(*logins)

    results = asyncio.run(run())
    assert all(result.success for result in results)
    assert [result.group for result in results] == ["staff"] * 10 + [None] * 10

"""End-to-end tests of method ``certificate`` on IMAP4S, POP3S and SMTPS.

Each login types only the mail part (``mailuser`` and its password). The
client certificates come from :mod:`.clientcerts`, and the proxies run in
front of the Dovecot and Postfix fixtures.
"""

from __future__ import annotations

import imaplib
import json
import logging
import poplib
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from .clientcerts import ClientCertificate, ClientPki, make_client_pki
from .conftest import unavailable
from .dovecot import DovecotServer
from .inbox import split_body, take_delivered
from .postfix import DOMAIN, PostfixServer
from .proxyfixtures import (
    CLIENT_TIMEOUT,
    MAIL_USER,
    VPN_PASSWORD,
    VPN_USER,
    RawClient,
    RunningProxy,
    StartProxy,
)

pytestmark = pytest.mark.e2e

IMAP_FAILURE = b"a NO [AUTHENTICATIONFAILED]"
POP3_FAILURE = b"-ERR [AUTH]"

#: What a client sees when the proxy rejects its certificate: the TLS alert
#: when it arrives, else the closed connection.
REJECTED_HANDSHAKE = frozenset(
    {"closed", "TLSV13_ALERT_CERTIFICATE_REQUIRED", "TLSV1_ALERT_UNKNOWN_CA"}
)

#: OpenSSL's reasons in the proxy's log.
NO_CERTIFICATE = "PEER_DID_NOT_RETURN_A_CERTIFICATE"
UNTRUSTED_CERTIFICATE = "CERTIFICATE_VERIFY_FAILED"

#: Seconds that curl may take for the whole transfer.
CURL_TIMEOUT = 10

#: Seconds that the proxy may take to close and log a finished connection.
CLOSE_TIMEOUT = 5.0

SENDER = f"{MAIL_USER}@{DOMAIN}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ClientPki:
    """Return the test CA and client certificates."""
    return make_client_pki(tmp_path_factory.mktemp("client-pki"))


def certificate_keys(pki: ClientPki, *methods: str, **keys: Any) -> dict[str, Any]:
    """Return listener keys that trust the test CA and use ``methods``."""
    chosen = list(methods) or ["certificate", "mailhost"]
    return {"authentication": chosen, "client_ca": str(pki.ca_file), **keys}


def context_for(
    proxy: RunningProxy, client: ClientCertificate | None
) -> ssl.SSLContext:
    """Return a context that trusts the proxy and presents ``client``, if any."""
    context = proxy.client_context()
    if client is not None:
        client.load_into(context)
    return context


def connect_tls(proxy: RunningProxy, port: int, context: ssl.SSLContext) -> RawClient:
    """Open a raw TLS connection to ``port`` of the proxy."""
    sock = socket.create_connection((proxy.host, port), CLIENT_TIMEOUT)
    return RawClient(context.wrap_socket(sock, server_hostname=proxy.host))


def handshake_outcome(proxy: RunningProxy, port: int, context: ssl.SSLContext) -> str:
    """Connect, read once, and return ``greeting``, ``closed`` or the TLS error.

    With TLS 1.3 the client finishes its side of the handshake before the
    server has checked the client certificate, so the server's rejection
    shows on the first read. asyncio in Python 3.11 closes the connection
    without sending the TLS alert, so the client sees it close.
    """
    try:
        with connect_tls(proxy, port, context) as client:
            data = client.sock.recv(1024)
    except ssl.SSLError as error:
        return str(error.reason)
    except (ConnectionResetError, BrokenPipeError):
        return "closed"
    return "greeting" if data else "closed"


def assert_handshake_rejected(
    proxy: RunningProxy,
    port: int,
    context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
    reason: str,
) -> None:
    """Assert that the proxy ends the TLS handshake and logs ``reason``."""
    caplog.set_level(logging.INFO, logger="mailproxy_core")
    outcome = handshake_outcome(proxy, port, context)
    assert outcome in REJECTED_HANDSHAKE

    wait_until_idle(proxy)
    assert f"closed: client TLS handshake failed: [SSL: {reason}]" in caplog.text


def mail_password(dovecot: DovecotServer) -> str:
    """Return the password of ``mailuser``."""
    return dovecot.users[MAIL_USER]


def first_message(imap: imaplib.IMAP4) -> bytes:
    """Select INBOX read-only and fetch message 1."""
    assert imap.select("INBOX", readonly=True)[0] == "OK"
    status, data = imap.fetch("1", "(BODY.PEEK[])")
    assert status == "OK"
    item = data[0]
    assert isinstance(item, tuple)
    return bytes(item[1])


def imap_login_reply(
    proxy: RunningProxy, context: ssl.SSLContext, user: str, password: str
) -> bytes:
    """Log in with a raw IMAP client and return the tagged reply line."""
    with connect_tls(proxy, proxy.port, context) as client:
        assert client.read_until(b"\r\n").startswith(b"* OK")
        client.send(f'a LOGIN "{user}" "{password}"\r\n'.encode())
        return client.read_until(b"a ") + client.read_until(b"\r\n")


def wait_until_idle(proxy: RunningProxy) -> None:
    """Wait until the proxy has closed and logged every connection.

    :raises AssertionError: when a connection is still open after
        :data:`CLOSE_TIMEOUT`.
    """
    deadline = time.monotonic() + CLOSE_TIMEOUT
    while proxy.call(lambda: any(x.connections for x in proxy.server.listeners)):
        assert time.monotonic() < deadline, "a proxy connection is still open"
        time.sleep(0.02)


# IMAP4S


def test_imap_certificate_login_fetches(
    start_proxy: StartProxy, dovecot: DovecotServer, pki: ClientPki
) -> None:
    proxy = start_proxy({"imap4s": certificate_keys(pki)})
    context = context_for(proxy, pki.full)
    with imaplib.IMAP4_SSL(
        proxy.host, proxy.port, ssl_context=context, timeout=CLIENT_TIMEOUT
    ) as imap:
        status, _ = imap.login(MAIL_USER, mail_password(dovecot))
        assert status == "OK"
        assert first_message(imap) == dovecot.messages[0]
        imap.logout()


def test_imap_without_certificate_fails_login(
    start_proxy: StartProxy,
    dovecot: DovecotServer,
    pki: ClientPki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mailproxy_core")
    proxy = start_proxy({"imap4s": certificate_keys(pki)})
    context = context_for(proxy, None)
    reply = imap_login_reply(proxy, context, MAIL_USER, mail_password(dovecot))
    assert reply.startswith(IMAP_FAILURE)

    wait_until_idle(proxy)
    assert "authentication failed (certificate): client sent no certificate" in (
        caplog.text
    )


def test_imap_required_certificate_missing(
    start_proxy: StartProxy, pki: ClientPki, caplog: pytest.LogCaptureFixture
) -> None:
    keys = certificate_keys(pki, client_certificate="required")
    proxy = start_proxy({"imap4s": keys})
    context = context_for(proxy, None)
    assert_handshake_rejected(proxy, proxy.port, context, caplog, NO_CERTIFICATE)


def test_imap_required_certificate_present(
    start_proxy: StartProxy, dovecot: DovecotServer, pki: ClientPki
) -> None:
    keys = certificate_keys(pki, client_certificate="required")
    proxy = start_proxy({"imap4s": keys})
    context = context_for(proxy, pki.full)
    reply = imap_login_reply(proxy, context, MAIL_USER, mail_password(dovecot))
    assert b"a OK" in reply


@pytest.mark.parametrize("mode", ["optional", "required"])
def test_imap_foreign_ca_fails_handshake(
    start_proxy: StartProxy, pki: ClientPki, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = start_proxy({"imap4s": certificate_keys(pki, client_certificate=mode)})
    context = context_for(proxy, pki.foreign)
    reason = UNTRUSTED_CERTIFICATE
    assert_handshake_rejected(proxy, proxy.port, context, caplog, reason)


def test_imap_ou_only_certificate_uses_ou(
    start_proxy: StartProxy, dovecot: DovecotServer, pki: ClientPki
) -> None:
    proxy = start_proxy({"imap4s": certificate_keys(pki)})
    context = context_for(proxy, pki.ou_only)
    reply = imap_login_reply(proxy, context, MAIL_USER, mail_password(dovecot))
    assert b"a OK" in reply


def test_imap_ou_only_certificate_without_cn(
    start_proxy: StartProxy,
    dovecot: DovecotServer,
    pki: ClientPki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mailproxy_core")
    keys = certificate_keys(pki, certificate_username=["CN"])
    proxy = start_proxy({"imap4s": keys})
    context = context_for(proxy, pki.ou_only)
    reply = imap_login_reply(proxy, context, MAIL_USER, mail_password(dovecot))
    assert reply.startswith(IMAP_FAILURE)

    wait_until_idle(proxy)
    assert "authentication failed (certificate): certificate subject has no CN" in (
        caplog.text
    )


def test_imap_entire_dn_identity_logged(
    start_proxy: StartProxy,
    dovecot: DovecotServer,
    pki: ClientPki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mailproxy_core")
    keys = certificate_keys(pki, certificate_username="entire-dn")
    proxy = start_proxy({"imap4s": keys, "accounting_file": "accounting.jsonl"})
    context = context_for(proxy, pki.full)
    reply = imap_login_reply(proxy, context, MAIL_USER, mail_password(dovecot))
    assert b"a OK" in reply

    wait_until_idle(proxy)
    dn = f"CN={VPN_USER},OU=staff"
    assert f"client certificate with subject {dn!r}" in caplog.text
    assert f"authentication passed: certificate, user name '{dn}'" in caplog.text
    path = proxy.config.accounting_file
    assert path is not None
    record = json.loads(path.read_text().splitlines()[-1])
    assert record["identity"] == dn
    assert record["methods"] == ["certificate", "mailhost"]
    assert record["authenticated"] is True


def test_imap_certificate_with_aaa(
    start_proxy: StartProxy, dovecot: DovecotServer, pki: ClientPki
) -> None:
    keys = certificate_keys(pki, "certificate", "aaa", "mailhost")
    proxy = start_proxy({"imap4s": keys})
    context = context_for(proxy, pki.full)
    with imaplib.IMAP4_SSL(
        proxy.host, proxy.port, ssl_context=context, timeout=CLIENT_TIMEOUT
    ) as imap:
        user = f"{VPN_USER}:{MAIL_USER}"
        password = f"{VPN_PASSWORD}:{mail_password(dovecot)}"
        status, _ = imap.login(user, password)
        assert status == "OK"
        assert first_message(imap) == dovecot.messages[0]
        imap.logout()


def test_imap_certificate_aaa_user_mismatch(
    start_proxy: StartProxy,
    dovecot: DovecotServer,
    pki: ClientPki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mailproxy_core")
    keys = certificate_keys(pki, "certificate", "aaa", "mailhost")
    proxy = start_proxy({"imap4s": keys})

    # The OU-only certificate gives the user name "staff", not "vpnuser".
    context = context_for(proxy, pki.ou_only)
    user = f"{VPN_USER}:{MAIL_USER}"
    password = f"{VPN_PASSWORD}:{mail_password(dovecot)}"
    reply = imap_login_reply(proxy, context, user, password)
    assert reply.startswith(IMAP_FAILURE)

    wait_until_idle(proxy)
    assert "authentication failed (aaa): VPN user name differs" in caplog.text


def test_imap_starttls_certificate_login(
    start_proxy: StartProxy, dovecot: DovecotServer, pki: ClientPki
) -> None:
    keys = certificate_keys(pki, starttls="required")
    proxy = start_proxy({"imap4s": keys})
    with imaplib.IMAP4(proxy.host, proxy.port, timeout=CLIENT_TIMEOUT) as imap:
        imap.starttls(context_for(proxy, pki.full))
        status, _ = imap.login(MAIL_USER, mail_password(dovecot))
        assert status == "OK"
        assert first_message(imap) == dovecot.messages[0]


def test_curl_reads_message_with_certificate(
    start_proxy: StartProxy, dovecot: DovecotServer, pki: ClientPki, tmp_path: Path
) -> None:
    curl = shutil.which("curl")
    if curl is None:
        unavailable("curl is not installed; run scripts/run-tests, which installs it")
    proxy = start_proxy({"imap4s": certificate_keys(pki)})
    pair = proxy.listener.tls.self_signed
    assert pair is not None
    proxy_ca = tmp_path / "proxy-ca.pem"
    proxy_ca.write_bytes(pair.certificate)

    command = [
        curl,
        "--silent",
        "--show-error",
        "--max-time",
        str(CURL_TIMEOUT),
        "--cacert",
        str(proxy_ca),
        "--cert",
        str(pki.full.certificate),
        "--key",
        str(pki.full.key),
        "--user",
        f"{MAIL_USER}:{mail_password(dovecot)}",
        f"imaps://{proxy.host}:{proxy.port}/INBOX;MAILINDEX=1",
    ]
    result = subprocess.run(
        command, capture_output=True, timeout=CURL_TIMEOUT + 5, check=False
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stdout == dovecot.messages[0]


# POP3S


def pop3s_section(dovecot: DovecotServer, pki: ClientPki, **keys: Any) -> Any:
    """Return a POP3S listener in front of Dovecot with method certificate."""
    return {
        "listen": "127.0.0.1:0",
        "default_server": "mail",
        "servers": {"mail": {"host": dovecot.host, "port": dovecot.pop3_port}},
        **certificate_keys(pki, **keys),
    }


def open_pop3(proxy: RunningProxy, context: ssl.SSLContext) -> poplib.POP3_SSL:
    """Connect a POP3 client to the proxy's POP3S listener."""
    return poplib.POP3_SSL(
        proxy.host, proxy.port_of("pop3s"), context=context, timeout=CLIENT_TIMEOUT
    )


def test_pop3_certificate_login_retrieves(
    start_proxy: StartProxy, dovecot: DovecotServer, pki: ClientPki
) -> None:
    proxy = start_proxy({"pop3s": pop3s_section(dovecot, pki)})
    pop = open_pop3(proxy, context_for(proxy, pki.full))
    try:
        pop.user(MAIL_USER)
        pop.pass_(mail_password(dovecot))
        _response, lines, _octets = pop.retr(1)
        assert b"\r\n".join(lines) + b"\r\n" == dovecot.messages[0]
    finally:
        pop.quit()


def test_pop3_without_certificate_fails_login(
    start_proxy: StartProxy, dovecot: DovecotServer, pki: ClientPki
) -> None:
    proxy = start_proxy({"pop3s": pop3s_section(dovecot, pki)})
    pop = open_pop3(proxy, context_for(proxy, None))
    try:
        pop.user(MAIL_USER)
        with pytest.raises(poplib.error_proto) as caught:
            pop.pass_(mail_password(dovecot))
        reply = caught.value.args[0]
        assert isinstance(reply, bytes)
        assert reply.startswith(POP3_FAILURE)
    finally:
        pop.quit()


def test_pop3_required_certificate_missing(
    start_proxy: StartProxy,
    dovecot: DovecotServer,
    pki: ClientPki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    section = pop3s_section(dovecot, pki, client_certificate="required")
    proxy = start_proxy({"pop3s": section})
    port, context = proxy.port_of("pop3s"), context_for(proxy, None)
    assert_handshake_rejected(proxy, port, context, caplog, NO_CERTIFICATE)


def test_pop3_foreign_ca_fails_handshake(
    start_proxy: StartProxy,
    dovecot: DovecotServer,
    pki: ClientPki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = start_proxy({"pop3s": pop3s_section(dovecot, pki)})
    port, context = proxy.port_of("pop3s"), context_for(proxy, pki.foreign)
    assert_handshake_rejected(proxy, port, context, caplog, UNTRUSTED_CERTIFICATE)


# SMTPS


def smtps_section(postfix: PostfixServer, pki: ClientPki, **keys: Any) -> Any:
    """Return an SMTPS listener in front of Postfix with method certificate."""
    submission = {"host": postfix.host, "port": postfix.submission_port}
    return {
        "listen": "127.0.0.1:0",
        "default_server": "submission",
        "servers": {"submission": submission},
        **certificate_keys(pki, **keys),
    }


def open_smtp(proxy: RunningProxy, context: ssl.SSLContext) -> smtplib.SMTP_SSL:
    """Connect an SMTP client to the proxy's SMTPS listener."""
    return smtplib.SMTP_SSL(
        proxy.host, proxy.port_of("smtps"), context=context, timeout=CLIENT_TIMEOUT
    )


def test_smtp_certificate_login_delivers(
    start_proxy: StartProxy,
    dovecot: DovecotServer,
    postfix: PostfixServer,
    pki: ClientPki,
) -> None:
    proxy = start_proxy({"smtps": smtps_section(postfix, pki)})
    message_id = f"<{uuid.uuid4().hex}@mailproxy.test>"
    body = b"Sent with a client certificate.\r\n"
    message = (
        f"From: <{SENDER}>\r\nTo: <{SENDER}>\r\nSubject: certificate test\r\n"
        f"Message-ID: {message_id}\r\n\r\n"
    ).encode() + body

    with open_smtp(proxy, context_for(proxy, pki.full)) as smtp:
        smtp.login(MAIL_USER, mail_password(dovecot))
        assert smtp.sendmail(SENDER, [SENDER], message) == {}

    stored = take_delivered(dovecot, MAIL_USER, message_id)
    assert split_body(stored) == body


def test_smtp_without_certificate_fails_login(
    start_proxy: StartProxy,
    dovecot: DovecotServer,
    postfix: PostfixServer,
    pki: ClientPki,
) -> None:
    proxy = start_proxy({"smtps": smtps_section(postfix, pki)})
    with open_smtp(proxy, context_for(proxy, None)) as smtp:
        with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
            smtp.login(MAIL_USER, mail_password(dovecot))
        assert caught.value.smtp_code == 535
        assert caught.value.smtp_error.startswith(b"5.7.8")


def test_smtp_required_certificate_missing(
    start_proxy: StartProxy,
    postfix: PostfixServer,
    pki: ClientPki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    section = smtps_section(postfix, pki, client_certificate="required")
    proxy = start_proxy({"smtps": section})
    port, context = proxy.port_of("smtps"), context_for(proxy, None)
    assert_handshake_rejected(proxy, port, context, caplog, NO_CERTIFICATE)


def test_smtp_foreign_ca_fails_handshake(
    start_proxy: StartProxy,
    postfix: PostfixServer,
    pki: ClientPki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = start_proxy({"smtps": smtps_section(postfix, pki)})
    port, context = proxy.port_of("smtps"), context_for(proxy, pki.foreign)
    assert_handshake_rejected(proxy, port, context, caplog, UNTRUSTED_CERTIFICATE)

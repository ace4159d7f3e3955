"""End-to-end tests of OAuth 2.0 bearer tokens through the proxy.

A listener whose methods leave out ``aaa`` accepts SASL XOAUTH2 and
OAUTHBEARER and passes the token to the upstream unchanged, in a SASL
message rebuilt for the mail user name. Dovecot's oauth2 passdb checks the
token at the introspection endpoint of :mod:`.oauthserver`. A rejected token
ends with the upstream's JSON error challenge (RFC 7628 section 3.2.2).
The client responds to it and then gets the upstream's failure.
"""

from __future__ import annotations

import base64
import imaplib
import json
import poplib
import smtplib
import uuid
from collections.abc import Iterator
from typing import Any, overload

import pytest

from .dovecot import HOST, DovecotServer
from .inbox import split_body, take_delivered
from .oauthfixtures import BAD_TOKEN, GOOD_TOKEN, LONG_TOKEN, OTHER_USER_TOKEN
from .oauthserver import INTROSPECTION_PATH, IntrospectionServer
from .postfix import DOMAIN, PostfixServer
from .proxyfixtures import CLIENT_TIMEOUT, MAIL_USER, RunningProxy, StartProxy

pytestmark = pytest.mark.e2e

#: The name of a second upstream entry, typed as ``mailuser@oauth``.
SERVER_NAME = "oauth"

#: The error challenge of Dovecot 2.3 for each mechanism, as JSON.
ERROR_STATUS = {"XOAUTH2": "401", "OAUTHBEARER": "invalid_token"}

#: The client's response to the error challenge: empty for XOAUTH2, and
#: the single 0x01 byte of RFC 7628 section 3.2.3 for OAUTHBEARER.
ERROR_RESPONSE = {"XOAUTH2": b"", "OAUTHBEARER": b"\x01"}

TOKEN_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")

#: Longest POP3 response line read, in bytes with CRLF. The error
#: challenge is far shorter.
MAX_POP3_LINE = 2048


# Helpers ---------------------------------------------------------------------


def sasl_message(mechanism: str, user: str, token: str) -> bytes:
    """Build the client's XOAUTH2 or OAUTHBEARER message, not base64-encoded.

    Written out here, apart from the proxy's own encoder, so that the tests
    check the bytes that real clients send.
    """
    if mechanism == "XOAUTH2":
        return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
    return f"n,a={user},\x01auth=Bearer {token}\x01\x01".encode()


def b64(data: bytes) -> str:
    """Encode ``data`` as base64 text without line breaks."""
    return base64.b64encode(data).decode("ascii")


def decode_challenge(text: bytes | str) -> dict[str, Any]:
    """Decode a base64 JSON error challenge into its object."""
    document = json.loads(base64.b64decode(text, validate=True))
    assert isinstance(document, dict), document
    return document


def listener(
    upstream_port: int, *, methods: tuple[str, ...] = ("mailhost",)
) -> dict[str, Any]:
    """Return a listener table whose two servers are ``upstream_port``.

    ``mail`` is the default server and :data:`SERVER_NAME` is the same
    upstream under another name, so a typed ``mailuser@oauth`` selects it.
    """
    server = {"host": HOST, "port": upstream_port, "tls": "none"}
    return {
        "listen": "127.0.0.1:0",
        "authentication": list(methods),
        "authentication_server_group": "LOCAL",
        "default_server": "mail",
        "servers": {"mail": server, SERVER_NAME: server},
    }


class ChallengeRecorder:
    """An authobject for :meth:`imaplib.IMAP4.authenticate` and smtplib.

    It sends ``message`` at the first (empty) challenge, records every
    later challenge and responds to it with ``response``.
    """

    def __init__(self, message: bytes, response: bytes = b"") -> None:
        self.message = message
        self.response = response
        self.challenges: list[bytes] = []
        self._sent = False

    def __call__(self, challenge: bytes | None = None) -> bytes:
        if not self._sent:
            self._sent = True
            return self.message
        self.challenges.append(challenge or b"")
        return self.response


class SmtpAuthObject:
    """Adapt a :class:`ChallengeRecorder` to :meth:`smtplib.SMTP.auth`.

    smtplib calls it with no argument for the initial response and expects
    ASCII text back.
    """

    def __init__(self, recorder: ChallengeRecorder) -> None:
        self.recorder = recorder

    @overload
    def __call__(self, challenge: None = None, /) -> str | None: ...

    @overload
    def __call__(self, challenge: bytes, /) -> str: ...

    def __call__(self, challenge: bytes | None = None, /) -> str | None:
        return self.recorder(challenge).decode("ascii")


@pytest.fixture
def introspection(oauth_server: IntrospectionServer) -> Iterator[IntrospectionServer]:
    """Return the introspection endpoint with no request recorded yet."""
    oauth_server.take_requests()
    yield oauth_server
    oauth_server.take_requests()


@pytest.fixture
def token_proxy(start_proxy: StartProxy, dovecot_oauth: DovecotServer) -> RunningProxy:
    """Return a proxy whose listeners log in with ``mailhost`` alone.

    The IMAP4S and POP3S listeners use the OAuth Dovecot.
    """
    return start_proxy(
        {
            "imap4s": listener(dovecot_oauth.imap_port),
            "pop3s": listener(dovecot_oauth.pop3_port),
        }
    )


def pop3_client(proxy: RunningProxy) -> poplib.POP3_SSL:
    """Open a POP3 client connection to the proxy's POP3S listener."""
    return poplib.POP3_SSL(
        proxy.host,
        proxy.port_of("pop3s"),
        context=proxy.client_context(),
        timeout=CLIENT_TIMEOUT,
    )


def pop3_send(pop: poplib.POP3, line: str) -> None:
    """Send one raw command line, for the SASL steps that poplib lacks."""
    pop.sock.sendall(line.encode("ascii") + b"\r\n")


def pop3_read(pop: poplib.POP3) -> bytes:
    """Read one raw response line and return it without CRLF."""
    line = pop.file.readline(MAX_POP3_LINE)
    assert line.endswith(b"\r\n"), line
    return line[:-2]


def smtp_client(proxy: RunningProxy) -> smtplib.SMTP_SSL:
    """Open an SMTP client connection to the proxy's SMTPS listener."""
    return smtplib.SMTP_SSL(
        proxy.host,
        proxy.port_of("smtps"),
        context=proxy.client_context(),
        timeout=CLIENT_TIMEOUT,
    )


def fetch_first(imap: imaplib.IMAP4) -> bytes:
    """Select INBOX read-only and fetch message 1 with ``BODY.PEEK[]``."""
    status, _count = imap.select("INBOX", readonly=True)
    assert status == "OK"
    status, data = imap.fetch("1", "(BODY.PEEK[])")
    assert status == "OK"
    item = data[0]
    assert isinstance(item, tuple)
    assert isinstance(item[1], bytes)
    return item[1]


def tokens_seen(server: IntrospectionServer) -> list[str | None]:
    """Return the token of each introspection request since the last call."""
    requests = server.take_requests()
    for request in requests:
        assert request.method == "POST"
        assert request.path == INTROSPECTION_PATH
        assert request.content_type.startswith("application/x-www-form-urlencoded")
    return [request.token for request in requests]


# The OAuth Dovecot on its own ------------------------------------------------


@pytest.mark.parametrize("mechanism", TOKEN_MECHANISMS)
def test_dovecot_oauth_checks_token_at_endpoint(
    dovecot_oauth: DovecotServer, introspection: IntrospectionServer, mechanism: str
) -> None:
    with imaplib.IMAP4(HOST, dovecot_oauth.imap_port, timeout=CLIENT_TIMEOUT) as imap:
        assert f"AUTH={mechanism}" in imap.capabilities
        message = sasl_message(mechanism, MAIL_USER, GOOD_TOKEN)
        status, _ = imap.authenticate(mechanism, ChallengeRecorder(message))
        assert status == "OK"
        assert fetch_first(imap) == dovecot_oauth.messages[0]
    assert tokens_seen(introspection) == [GOOD_TOKEN]


def test_dovecot_oauth_password_skips_endpoint(
    dovecot_oauth: DovecotServer, introspection: IntrospectionServer
) -> None:
    with imaplib.IMAP4(HOST, dovecot_oauth.imap_port, timeout=CLIENT_TIMEOUT) as imap:
        status, _ = imap.login(MAIL_USER, dovecot_oauth.users[MAIL_USER])
        assert status == "OK"
    # A token typed as the password goes to the password file only.
    with (
        imaplib.IMAP4(HOST, dovecot_oauth.imap_port, timeout=CLIENT_TIMEOUT) as imap,
        pytest.raises(imaplib.IMAP4.error),
    ):
        imap.login(MAIL_USER, GOOD_TOKEN)
    assert tokens_seen(introspection) == []


def test_default_dovecot_offers_no_tokens(dovecot: DovecotServer) -> None:
    with imaplib.IMAP4(HOST, dovecot.imap_port, timeout=CLIENT_TIMEOUT) as imap:
        for mechanism in TOKEN_MECHANISMS:
            assert f"AUTH={mechanism}" not in imap.capabilities


# IMAP4S ----------------------------------------------------------------------


def test_imap_advertises_token_mechanisms(token_proxy: RunningProxy) -> None:
    with token_proxy.imap() as imap:
        for mechanism in TOKEN_MECHANISMS:
            assert f"AUTH={mechanism}" in imap.capabilities


@pytest.mark.parametrize("mechanism", TOKEN_MECHANISMS)
def test_imap_token_select_fetch(
    token_proxy: RunningProxy,
    dovecot_oauth: DovecotServer,
    introspection: IntrospectionServer,
    mechanism: str,
) -> None:
    with token_proxy.imap() as imap:
        message = sasl_message(mechanism, MAIL_USER, GOOD_TOKEN)
        status, _ = imap.authenticate(mechanism, ChallengeRecorder(message))
        assert status == "OK"
        assert fetch_first(imap) == dovecot_oauth.messages[0]
        imap.logout()
    assert tokens_seen(introspection) == [GOOD_TOKEN]


@pytest.mark.parametrize("mechanism", TOKEN_MECHANISMS)
def test_imap_token_with_server_name(
    token_proxy: RunningProxy,
    dovecot_oauth: DovecotServer,
    introspection: IntrospectionServer,
    mechanism: str,
) -> None:
    # Dovecot requires the SASL user name to equal the token's user, so
    # this login passes only if the proxy cut "@oauth" off before sending.
    typed = f"{MAIL_USER}@{SERVER_NAME}"
    with token_proxy.imap() as imap:
        message = sasl_message(mechanism, typed, GOOD_TOKEN)
        status, _ = imap.authenticate(mechanism, ChallengeRecorder(message))
        assert status == "OK"
        assert fetch_first(imap) == dovecot_oauth.messages[0]
    assert tokens_seen(introspection) == [GOOD_TOKEN]


@pytest.mark.parametrize("mechanism", TOKEN_MECHANISMS)
@pytest.mark.parametrize("token", [BAD_TOKEN, OTHER_USER_TOKEN])
def test_imap_rejected_token_relays_challenge(
    token_proxy: RunningProxy,
    dovecot_oauth: DovecotServer,
    introspection: IntrospectionServer,
    mechanism: str,
    token: str,
) -> None:
    with token_proxy.imap() as imap:
        recorder = ChallengeRecorder(
            sasl_message(mechanism, MAIL_USER, token), ERROR_RESPONSE[mechanism]
        )
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap.authenticate(mechanism, recorder)
        [challenge] = recorder.challenges
        assert json.loads(challenge)["status"] == ERROR_STATUS[mechanism]

        # The failed exchange leaves the connection ready for another login.
        retry = ChallengeRecorder(sasl_message(mechanism, MAIL_USER, GOOD_TOKEN))
        status, _ = imap.authenticate(mechanism, retry)
        assert status == "OK"
        assert fetch_first(imap) == dovecot_oauth.messages[0]
    assert tokens_seen(introspection) == [token, GOOD_TOKEN]


@pytest.mark.parametrize("mechanism", TOKEN_MECHANISMS)
def test_imap_error_challenge_raw_bytes(
    token_proxy: RunningProxy, introspection: IntrospectionServer, mechanism: str
) -> None:
    message = b64(sasl_message(mechanism, MAIL_USER, BAD_TOKEN))
    with token_proxy.tls_client() as client:
        client.read_until(b"\r\n")
        client.send(f"a AUTHENTICATE {mechanism} {message}\r\n".encode())
        line = client.read_until(b"\r\n")
        assert line.startswith(b"+ ")
        challenge = decode_challenge(line[2:].rstrip(b"\r\n"))
        assert challenge["status"] == ERROR_STATUS[mechanism]

        response = b64(ERROR_RESPONSE[mechanism]).encode()
        client.send(response + b"\r\n")
        final = client.read_until(b"\r\n")
        assert final.startswith(b"a NO ")
        assert b"AUTHENTICATIONFAILED" in final
    assert tokens_seen(introspection) == [BAD_TOKEN]


def test_imap_cancelled_challenge_ends_login(
    token_proxy: RunningProxy, introspection: IntrospectionServer
) -> None:
    message = b64(sasl_message("OAUTHBEARER", MAIL_USER, BAD_TOKEN))
    with token_proxy.tls_client() as client:
        client.read_until(b"\r\n")
        client.send(f"a AUTHENTICATE OAUTHBEARER {message}\r\n".encode())
        assert client.read_until(b"\r\n").startswith(b"+ ")

        # "*" cancels the exchange (RFC 9051 section 6.2.2). It goes upstream
        # too, and the upstream's tagged BAD ends the login.
        client.send(b"*\r\n")
        final = client.read_until(b"\r\n")
        assert final.startswith(b"a BAD "), final

        client.send(b"b NOOP\r\n")
        assert client.read_until(b"\r\n").startswith(b"b OK")
    assert tokens_seen(introspection) == [BAD_TOKEN]


@pytest.mark.parametrize("mechanism", TOKEN_MECHANISMS)
def test_imap_long_token_passes(
    token_proxy: RunningProxy,
    dovecot_oauth: DovecotServer,
    introspection: IntrospectionServer,
    mechanism: str,
) -> None:
    with token_proxy.imap() as imap:
        message = sasl_message(mechanism, MAIL_USER, LONG_TOKEN)
        status, _ = imap.authenticate(mechanism, ChallengeRecorder(message))
        assert status == "OK"
        assert fetch_first(imap) == dovecot_oauth.messages[0]
    assert tokens_seen(introspection) == [LONG_TOKEN]


def test_imap_upstream_without_tokens_fails(
    start_proxy: StartProxy, dovecot: DovecotServer, oauth_server: IntrospectionServer
) -> None:
    # The default Dovecot offers no AUTH=XOAUTH2, so the token cannot go on.
    proxy = start_proxy({"imap4s": listener(dovecot.imap_port)})
    oauth_server.take_requests()
    with proxy.imap() as imap:
        message = sasl_message("XOAUTH2", MAIL_USER, GOOD_TOKEN)
        with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
            imap.authenticate("XOAUTH2", ChallengeRecorder(message))
    assert tokens_seen(oauth_server) == []


def test_imap_password_login_still_works(
    token_proxy: RunningProxy,
    dovecot_oauth: DovecotServer,
    introspection: IntrospectionServer,
) -> None:
    with token_proxy.imap() as imap:
        status, _ = imap.login(MAIL_USER, dovecot_oauth.users[MAIL_USER])
        assert status == "OK"
        assert fetch_first(imap) == dovecot_oauth.messages[0]
    assert tokens_seen(introspection) == []


# POP3S -----------------------------------------------------------------------


def test_pop3_advertises_token_mechanisms(token_proxy: RunningProxy) -> None:
    pop = pop3_client(token_proxy)
    try:
        sasl = pop.capa()["SASL"]
        for mechanism in TOKEN_MECHANISMS:
            assert mechanism in sasl
    finally:
        pop.quit()


@pytest.mark.parametrize("mechanism", TOKEN_MECHANISMS)
def test_pop3_token_retr(
    token_proxy: RunningProxy,
    dovecot_oauth: DovecotServer,
    introspection: IntrospectionServer,
    mechanism: str,
) -> None:
    message = b64(sasl_message(mechanism, f"{MAIL_USER}@{SERVER_NAME}", GOOD_TOKEN))
    pop = pop3_client(token_proxy)
    try:
        pop3_send(pop, f"AUTH {mechanism} {message}")
        assert pop3_read(pop).startswith(b"+OK")
        count, _size = pop.stat()
        assert count == len(dovecot_oauth.messages)
        _response, lines, _octets = pop.retr(1)
        assert b"\r\n".join(lines) + b"\r\n" == dovecot_oauth.messages[0]
    finally:
        pop.quit()
    assert tokens_seen(introspection) == [GOOD_TOKEN]


@pytest.mark.parametrize("mechanism", TOKEN_MECHANISMS)
def test_pop3_long_token_passes(
    token_proxy: RunningProxy,
    dovecot_oauth: DovecotServer,
    introspection: IntrospectionServer,
    mechanism: str,
) -> None:
    # The proxy sends AUTH upstream without the initial response, which
    # would make the line longer than 255 octets (RFC 5034 section 4).
    message = b64(sasl_message(mechanism, MAIL_USER, LONG_TOKEN))
    pop = pop3_client(token_proxy)
    try:
        pop3_send(pop, f"AUTH {mechanism} {message}")
        assert pop3_read(pop).startswith(b"+OK")
        count, _size = pop.stat()
        assert count == len(dovecot_oauth.messages)
    finally:
        pop.quit()
    assert tokens_seen(introspection) == [LONG_TOKEN]


@pytest.mark.parametrize("mechanism", TOKEN_MECHANISMS)
def test_pop3_rejected_token_relays_challenge(
    token_proxy: RunningProxy, introspection: IntrospectionServer, mechanism: str
) -> None:
    message = b64(sasl_message(mechanism, MAIL_USER, BAD_TOKEN))
    pop = pop3_client(token_proxy)
    try:
        pop3_send(pop, f"AUTH {mechanism} {message}")
        line = pop3_read(pop)
        assert line.startswith(b"+ ")
        challenge = decode_challenge(line[2:])
        assert challenge["status"] == ERROR_STATUS[mechanism]

        pop3_send(pop, b64(ERROR_RESPONSE[mechanism]))
        assert pop3_read(pop).startswith(b"-ERR [AUTH] ")
    finally:
        pop.quit()
    assert tokens_seen(introspection) == [BAD_TOKEN]


# SMTPS -----------------------------------------------------------------------


@pytest.fixture
def smtp_token_proxy(
    start_proxy: StartProxy, postfix_oauth: PostfixServer
) -> RunningProxy:
    """Return a proxy whose SMTPS listener logs in with ``mailhost`` alone.

    It submits to the Postfix that authenticates through the OAuth Dovecot.
    """
    return start_proxy({"smtps": listener(postfix_oauth.submission_port)})


def test_smtp_advertises_token_mechanisms(smtp_token_proxy: RunningProxy) -> None:
    with smtp_client(smtp_token_proxy) as smtp:
        smtp.ehlo()
        mechanisms = smtp.esmtp_features["auth"].split()
        for mechanism in TOKEN_MECHANISMS:
            assert mechanism in mechanisms


@pytest.mark.parametrize("initial_response", [True, False])
@pytest.mark.parametrize("mechanism", TOKEN_MECHANISMS)
def test_smtp_token_submission_delivers(
    smtp_token_proxy: RunningProxy,
    dovecot_oauth: DovecotServer,
    introspection: IntrospectionServer,
    mechanism: str,
    initial_response: bool,
) -> None:
    sender = f"{MAIL_USER}@{DOMAIN}"
    message_id = f"<{uuid.uuid4().hex}@mailproxy.test>"
    body = f"Submitted with {mechanism}.\r\n".encode()
    message = (
        f"From: <{sender}>\r\nTo: <{sender}>\r\nSubject: token test\r\n"
        f"Message-ID: {message_id}\r\n\r\n"
    ).encode() + body

    recorder = ChallengeRecorder(sasl_message(mechanism, MAIL_USER, GOOD_TOKEN))
    with smtp_client(smtp_token_proxy) as smtp:
        smtp.ehlo()
        code, _text = smtp.auth(
            mechanism, SmtpAuthObject(recorder), initial_response_ok=initial_response
        )
        assert code == 235
        refused = smtp.sendmail(sender, [sender], message)
        assert refused == {}

    stored = take_delivered(dovecot_oauth, MAIL_USER, message_id)
    assert split_body(stored) == body
    assert tokens_seen(introspection) == [GOOD_TOKEN]


@pytest.mark.parametrize("mechanism", TOKEN_MECHANISMS)
def test_smtp_rejected_token_relays_challenge(
    smtp_token_proxy: RunningProxy, introspection: IntrospectionServer, mechanism: str
) -> None:
    message = b64(sasl_message(mechanism, MAIL_USER, BAD_TOKEN))
    with smtp_client(smtp_token_proxy) as smtp:
        smtp.ehlo()
        code, text = smtp.docmd("AUTH", f"{mechanism} {message}")
        assert code == 334
        challenge = decode_challenge(text)
        assert challenge["status"] == ERROR_STATUS[mechanism]

        code, text = smtp.docmd(b64(ERROR_RESPONSE[mechanism]))
        assert code == 535, text
    assert tokens_seen(introspection) == [BAD_TOKEN]


# Listeners with aaa ------------------------------------------------------------


@pytest.fixture
def aaa_proxy(
    start_proxy: StartProxy,
    dovecot_oauth: DovecotServer,
    postfix_oauth: PostfixServer,
) -> RunningProxy:
    """Return a proxy whose listeners check ``aaa`` before ``mailhost``.

    The upstreams accept the good token, so a token that slipped through
    would log in and reach the introspection endpoint.
    """
    methods = ("aaa", "mailhost")
    return start_proxy(
        {
            "imap4s": listener(dovecot_oauth.imap_port, methods=methods),
            "pop3s": listener(dovecot_oauth.pop3_port, methods=methods),
            "smtps": listener(postfix_oauth.submission_port, methods=methods),
        }
    )


@pytest.mark.parametrize("mechanism", TOKEN_MECHANISMS)
def test_aaa_imap_rejects_tokens(
    aaa_proxy: RunningProxy, introspection: IntrospectionServer, mechanism: str
) -> None:
    with aaa_proxy.imap() as imap:
        assert f"AUTH={mechanism}" not in imap.capabilities
        recorder = ChallengeRecorder(sasl_message(mechanism, MAIL_USER, GOOD_TOKEN))
        with pytest.raises(imaplib.IMAP4.error, match="Unsupported"):
            imap.authenticate(mechanism, recorder)
        assert recorder.challenges == []

    message = b64(sasl_message(mechanism, MAIL_USER, GOOD_TOKEN))
    with aaa_proxy.tls_client() as client:
        client.read_until(b"\r\n")
        client.send(f"a AUTHENTICATE {mechanism} {message}\r\n".encode())
        assert client.read_until(b"\r\n").startswith(b"a NO ")
    assert tokens_seen(introspection) == []


@pytest.mark.parametrize("mechanism", TOKEN_MECHANISMS)
def test_aaa_pop3_rejects_tokens(
    aaa_proxy: RunningProxy, introspection: IntrospectionServer, mechanism: str
) -> None:
    message = b64(sasl_message(mechanism, MAIL_USER, GOOD_TOKEN))
    pop = pop3_client(aaa_proxy)
    try:
        assert mechanism not in pop.capa()["SASL"]
        pop3_send(pop, f"AUTH {mechanism} {message}")
        assert pop3_read(pop).startswith(b"-ERR Unsupported")
    finally:
        pop.quit()
    assert tokens_seen(introspection) == []


@pytest.mark.parametrize("mechanism", TOKEN_MECHANISMS)
def test_aaa_smtp_rejects_tokens(
    aaa_proxy: RunningProxy, introspection: IntrospectionServer, mechanism: str
) -> None:
    message = b64(sasl_message(mechanism, MAIL_USER, GOOD_TOKEN))
    with smtp_client(aaa_proxy) as smtp:
        smtp.ehlo()
        assert mechanism not in smtp.esmtp_features["auth"].split()
        code, _text = smtp.docmd("AUTH", f"{mechanism} {message}")
        assert code == 504
    assert tokens_seen(introspection) == []

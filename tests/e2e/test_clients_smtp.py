"""What real SMTP clients get from the SMTPS proxy in front of Postfix.

smtplib, curl and swaks submit through the proxy. Each test then reads its
message back through the IMAP4S listener of the same proxy and deletes it.
A :class:`~.tripwire.Tripwire` takes the place of every configured server
that a login must not contact.
"""

from __future__ import annotations

import base64
import shutil
import smtplib
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import pytest

from .conftest import unavailable
from .dovecot import DovecotServer
from .inbox import delete_message, fetch_message, split_body, wait_for_uid
from .postfix import DOMAIN, PostfixServer
from .proxyfixtures import (
    CLIENT_TIMEOUT,
    MAIL_USER,
    VPN_PASSWORD,
    VPN_USER,
    RunningProxy,
    StartProxy,
)
from .tripwire import Tripwire

pytestmark = pytest.mark.e2e

SENDER = f"{MAIL_USER}@{DOMAIN}"

#: Seconds that one curl or swaks run may take.
CLIENT_RUN_TIMEOUT = 10.0

#: Seconds to wait for Postfix to log the end of a session.
LOG_TIMEOUT = 5.0

# The dot line needs dot-stuffing on the way and must arrive unchanged.
BODY = (
    b"Submitted through the SMTPS proxy.\r\n"
    b".This line starts with a dot.\r\n"
    b"\r\n"
    b"Last line.\r\n"
)


def make_message() -> tuple[str, bytes]:
    """Build a message from and to ``mailuser`` with a unique Message-ID.

    :returns: The Message-ID header value and the whole message.
    """
    message_id = f"<{uuid.uuid4().hex}@mailproxy.test>"
    header = (
        f"From: Mail User <{SENDER}>\r\n"
        f"To: <{SENDER}>\r\n"
        "Subject: SMTPS proxy client test\r\n"
        f"Message-ID: {message_id}\r\n"
        "\r\n"
    )
    return message_id, header.encode() + BODY


def smtps_table(
    host: str, port: int, *, default: str, servers: Mapping[str, object] | None = None
) -> dict[str, object]:
    """Build an ``[smtps]`` listener with ``aaa`` and ``mailhost``.

    :param host: The host of server ``postfix``.
    :param port: The port of server ``postfix``.
    :param default: The name of the default server.
    :param servers: More server tables by name.
    :returns: The listener table.
    """
    postfix_server = {"host": host, "port": port, "tls": "none"}
    return {
        "listen": "127.0.0.1:0",
        "authentication": ["aaa", "mailhost"],
        "authentication_server_group": "LOCAL",
        "default_server": default,
        "servers": {"postfix": postfix_server, **(servers or {})},
    }


@pytest.fixture
def submission_proxy(start_proxy: StartProxy, postfix: PostfixServer) -> RunningProxy:
    """Return a proxy with the base IMAP4S listener and SMTPS to submission.

    :param start_proxy: The fixture function.
    :param postfix: The Postfix server behind the SMTPS listener.
    :returns: The running proxy.
    """
    table = smtps_table(postfix.host, postfix.submission_port, default="postfix")
    return start_proxy({"smtps": table})


def smtp_client(proxy: RunningProxy) -> smtplib.SMTP_SSL:
    """Open an SMTP client connection to the proxy, TLS verified.

    :param proxy: The proxy to connect to.
    :returns: The client, after the greeting.
    """
    return smtplib.SMTP_SSL(
        proxy.host,
        proxy.port_of("smtps"),
        context=proxy.client_context(),
        timeout=CLIENT_TIMEOUT,
    )


def combined(dovecot: DovecotServer) -> tuple[str, str]:
    """Return the combined user name and password for ``mailuser``.

    :param dovecot: The server whose mail password to use.
    :returns: ``vpnuser:mailuser`` and ``vpnpass:mailpass``.
    """
    return f"{VPN_USER}:{MAIL_USER}", f"{VPN_PASSWORD}:{dovecot.users[MAIL_USER]}"


def take_through_proxy(
    proxy: RunningProxy, dovecot: DovecotServer, message_id: str
) -> bytes:
    """Wait for a message over the proxy's IMAP4S listener, fetch and delete it.

    :param proxy: The proxy whose first listener is IMAP4S.
    :param dovecot: The server whose mail password to use.
    :param message_id: The Message-ID header value, with angle brackets.
    :returns: The message as Dovecot stored it.
    """
    with proxy.imap() as imap:
        status, data = imap.login(*combined(dovecot))
        assert status == "OK", data

        uid = wait_for_uid(imap, message_id)
        message = fetch_message(imap, uid)
        delete_message(imap, uid)
        imap.logout()
    return message


def plain_response(user: str, password: str) -> str:
    """Encode a SASL PLAIN initial response (RFC 4616).

    :param user: The authentication identity.
    :param password: The password.
    :returns: The base64 text.
    """
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_smtplib_submission_read_back(
    submission_proxy: RunningProxy, dovecot: DovecotServer
) -> None:
    message_id, message = make_message()

    with smtp_client(submission_proxy) as smtp:
        code, _text = smtp.login(*combined(dovecot))
        assert code == 235
        refused = smtp.sendmail(SENDER, [SENDER], message)
        assert refused == {}

    stored = take_through_proxy(submission_proxy, dovecot, message_id)
    assert split_body(stored) == BODY


def require_tool(name: str) -> str:
    """Locate a command-line client, or end the test when it is missing.

    :param name: The program name, such as ``curl``.
    :returns: Its path.
    """
    found = shutil.which(name)
    if found is None:
        unavailable(
            f"{name} is not installed; run scripts/run-tests, which installs it"
        )
    return found


def run_client(command: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run a command-line client with a time limit.

    :param command: The program and its arguments.
    :returns: The finished process, with stdout and stderr captured.
    """
    return subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=CLIENT_RUN_TIMEOUT + 5,
        check=False,
    )


def curl_command(url: str, message_file: Path, *options: str) -> list[str]:
    """Build a curl command that submits ``message_file`` to ``url``.

    :param url: The ``smtps://`` URL, credentials included.
    :param message_file: The message with CRLF line endings.
    :param options: More curl options.
    :returns: The command.
    """
    # -q skips any ~/.curlrc, and --noproxy keeps proxy variables of the
    # environment from sending the request anywhere but 127.0.0.1.
    return [
        require_tool("curl"),
        "-q",
        "--silent",
        "--show-error",
        "-k",
        "--noproxy", "*",
        "--max-time", str(CLIENT_RUN_TIMEOUT),
        "--mail-from", SENDER,
        "--mail-rcpt", SENDER,
        "--upload-file", str(message_file),
        *options,
        url,
    ]  # fmt: skip


def smtps_url(proxy: RunningProxy, dovecot: DovecotServer) -> str:
    """Build an ``smtps://`` URL with the combined credentials.

    curl splits ``-u`` at its first colon, but the combined user name
    contains one, so the credentials go percent-encoded into the URL. The
    path is the EHLO name.

    :param proxy: The proxy to connect to.
    :param dovecot: The server whose mail password to use.
    :returns: The URL.
    """
    user = f"{VPN_USER}%3A{MAIL_USER}"
    password = f"{VPN_PASSWORD}%3A{dovecot.users[MAIL_USER]}"
    port = proxy.port_of("smtps")
    return f"smtps://{user}:{password}@{proxy.host}:{port}/client.example"


@pytest.mark.parametrize(
    "login_options",
    [(), ("--login-options", "AUTH=PLAIN"), ("--login-options", "AUTH=LOGIN")],
    ids=["default", "plain", "login"],
)
def test_curl_submission_read_back(
    submission_proxy: RunningProxy,
    dovecot: DovecotServer,
    tmp_path: Path,
    login_options: tuple[str, ...],
) -> None:
    message_id, message = make_message()
    message_file = tmp_path / "message.eml"
    message_file.write_bytes(message)
    url = smtps_url(submission_proxy, dovecot)

    completed = run_client(curl_command(url, message_file, *login_options))

    assert completed.returncode == 0, completed.stderr
    stored = take_through_proxy(submission_proxy, dovecot, message_id)
    assert split_body(stored) == BODY


def swaks_command(
    proxy: RunningProxy, user: str, password: str, message_file: Path
) -> list[str]:
    """Build a swaks command that submits ``message_file`` over implicit TLS.

    :param proxy: The proxy to connect to.
    :param user: The user name for AUTH PLAIN.
    :param password: The password for AUTH PLAIN.
    :param message_file: The whole message.
    :returns: The command.
    """
    # swaks does not verify the server certificate unless --tls-verify is given.
    return [
        require_tool("swaks"),
        "--tls-on-connect",
        "--server", proxy.host,
        "--port", str(proxy.port_of("smtps")),
        "--ehlo", "client.example",
        "--auth", "PLAIN",
        "--auth-user", user,
        "--auth-password", password,
        "--from", SENDER,
        "--to", SENDER,
        "--data", f"@{message_file}",
        "--timeout", str(int(CLIENT_RUN_TIMEOUT)),
    ]  # fmt: skip


def test_swaks_submission_read_back(
    submission_proxy: RunningProxy, dovecot: DovecotServer, tmp_path: Path
) -> None:
    message_id, message = make_message()
    message_file = tmp_path / "message.eml"
    # swaks 20201014 sends CRLF . CRLF after the file's last byte, so a
    # final CRLF in the file would arrive as an extra empty line.
    message_file.write_bytes(message.removesuffix(b"\r\n"))
    command = swaks_command(submission_proxy, *combined(dovecot), message_file)

    completed = run_client(command)

    assert completed.returncode == 0, completed.stdout.decode(errors="replace")
    stored = take_through_proxy(submission_proxy, dovecot, message_id)
    assert split_body(stored) == BODY


def test_wrong_vpn_password_never_contacts_upstream(
    start_proxy: StartProxy,
    dovecot: DovecotServer,
    postfix: PostfixServer,
    tripwire: Tripwire,
) -> None:
    servers = {"trip": tripwire.server_table()}
    table = smtps_table(
        postfix.host, postfix.submission_port, default="trip", servers=servers
    )
    proxy = start_proxy({"smtps": table})
    user = f"{VPN_USER}:{MAIL_USER}"
    response = plain_response(user, f"wrong:{dovecot.users[MAIL_USER]}")

    with smtp_client(proxy) as smtp:
        smtp.ehlo("client.example")
        code, text = smtp.docmd("AUTH", f"PLAIN {response}")

    # The proxy's own text, which differs from Postfix's.
    assert code == 535
    assert text == b"5.7.8 Authentication credentials invalid"
    assert tripwire.count() == 0


def test_swaks_wrong_vpn_password_fails(
    start_proxy: StartProxy,
    dovecot: DovecotServer,
    postfix: PostfixServer,
    tripwire: Tripwire,
    tmp_path: Path,
) -> None:
    servers = {"trip": tripwire.server_table()}
    table = smtps_table(
        postfix.host, postfix.submission_port, default="trip", servers=servers
    )
    proxy = start_proxy({"smtps": table})
    _message_id, message = make_message()
    message_file = tmp_path / "message.eml"
    message_file.write_bytes(message)
    user = f"{VPN_USER}:{MAIL_USER}"
    password = f"wrong:{dovecot.users[MAIL_USER]}"

    completed = run_client(swaks_command(proxy, user, password, message_file))

    # swaks exits with 28 when the server rejects AUTH.
    transcript = completed.stdout.decode(errors="replace")
    assert completed.returncode == 28, transcript
    assert "<~* 535 5.7.8 " in transcript
    assert tripwire.count() == 0


def test_wrong_mail_password_gets_postfix_reply(
    submission_proxy: RunningProxy, dovecot: DovecotServer
) -> None:
    user = f"{VPN_USER}:{MAIL_USER}"
    response = plain_response(user, f"{VPN_PASSWORD}:wrong")

    with smtp_client(submission_proxy) as smtp:
        smtp.ehlo("client.example")
        code, text = smtp.docmd("AUTH", f"PLAIN {response}")

    # Postfix 3.7 words the failure this way, so the text shows it came
    # from the upstream and not from the proxy.
    assert code == 535
    assert text.startswith(b"5.7.8 Error: authentication failed"), text


def session_summaries(postfix: PostfixServer, service: str) -> list[str]:
    """Return the session summary lines that ``service`` logged so far.

    :param postfix: The server whose log to read.
    :param service: The ``syslog_name``, such as ``postfix/trusted``.
    :returns: The ``disconnect from`` lines, which list the commands that
        the client sent, such as ``ehlo=1 mail=1 rcpt=1 data=1 quit=1``.
    """
    lines = postfix.read_log().splitlines()
    return [
        line
        for line in lines
        if f"{service}/smtpd[" in line and "disconnect from" in line
    ]


def wait_for_disconnect(postfix: PostfixServer, service: str, before: int) -> str:
    """Poll Postfix's log until ``service`` logged a new session summary.

    :param postfix: The server whose log to read.
    :param service: The ``syslog_name``, as for :func:`session_summaries`.
    :param before: The number of summaries before the test acted.
    :returns: The first new summary line.
    """
    deadline = time.monotonic() + LOG_TIMEOUT
    while True:
        lines = session_summaries(postfix, service)
        if len(lines) > before:
            return lines[before]
        assert time.monotonic() < deadline, postfix.read_log()
        time.sleep(0.05)


def test_aaa_only_delivers_without_upstream_auth(
    start_proxy: StartProxy, dovecot: DovecotServer, postfix: PostfixServer
) -> None:
    trusted = {"host": postfix.host, "port": postfix.trusted_port, "tls": "none"}
    table = {
        "listen": "127.0.0.1:0",
        "authentication": ["aaa"],
        "authentication_server_group": "LOCAL",
        "default_server": "trusted",
        "servers": {"trusted": trusted},
    }
    proxy = start_proxy({"smtps": table})
    message_id, message = make_message()
    before = len(session_summaries(postfix, "postfix/trusted"))

    with smtp_client(proxy) as smtp:
        code, _text = smtp.login(VPN_USER, VPN_PASSWORD)
        assert code == 235
        refused = smtp.sendmail(SENDER, [SENDER], message)
        assert refused == {}

    stored = take_through_proxy(proxy, dovecot, message_id)
    assert split_body(stored) == BODY

    # Postfix counts every command of the session; the trusted port offers
    # no AUTH, and the summary shows that the proxy sent none.
    summary = wait_for_disconnect(postfix, "postfix/trusted", before)
    assert " auth=" not in summary, summary
    assert " data=1" in summary, summary

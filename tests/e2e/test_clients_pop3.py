"""What real POP3 clients receive from the POP3S proxy in front of Dovecot.

poplib and curl talk to the proxy. A :class:`~.tripwire.Tripwire` takes
the place of every configured server that a login must not contact.
"""

from __future__ import annotations

import base64
import poplib
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping

import pytest

from .conftest import unavailable
from .dovecot import DovecotServer
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

#: Seconds that one curl run may take, connect and transfer together.
CURL_TIMEOUT = 10.0

#: Seconds to wait for Dovecot to log the end of a failed login.
LOG_TIMEOUT = 5.0

#: The proxy's own reply to a failed login: no period, unlike Dovecot's.
PROXY_AUTH_FAILED = b"-ERR [AUTH] Authentication failed"

#: Dovecot 2.3's reply to a wrong password.
DOVECOT_AUTH_FAILED = b"-ERR [AUTH] Authentication failed."

#: Sends one login and returns the server's reply line.
Login = Callable[[poplib.POP3, str, str], bytes]


def pop3s_table(
    dovecot: DovecotServer, default: str, servers: Mapping[str, object]
) -> dict[str, object]:
    """Build a ``[pop3s]`` listener with Dovecot's POP3 as server ``mail``.

    :param dovecot: The server behind ``mail``.
    :param default: The name of the default server.
    :param servers: More server tables by name.
    :returns: The listener table.
    """
    mail = {"host": dovecot.host, "port": dovecot.pop3_port, "tls": "none"}
    return {
        "listen": "127.0.0.1:0",
        "authentication": ["aaa", "mailhost"],
        "authentication_server_group": "LOCAL",
        "default_server": default,
        "servers": {"mail": mail, **servers},
    }


def start_pop3s(
    start_proxy: StartProxy,
    dovecot: DovecotServer,
    default: str = "mail",
    servers: Mapping[str, object] | None = None,
) -> RunningProxy:
    """Start a proxy with :func:`pop3s_table` next to the base IMAP4S listener.

    :param start_proxy: The fixture function.
    :param dovecot: The server behind ``mail``.
    :param default: The name of the default server.
    :param servers: More server tables by name.
    :returns: The running proxy.
    """
    return start_proxy({"pop3s": pop3s_table(dovecot, default, servers or {})})


def connect(proxy: RunningProxy) -> poplib.POP3_SSL:
    """Open a POP3 client connection to the proxy, TLS verified.

    :param proxy: The proxy to connect to.
    :returns: The client, after the greeting.
    """
    return poplib.POP3_SSL(
        proxy.host,
        proxy.port_of("pop3s"),
        context=proxy.client_context(),
        timeout=CLIENT_TIMEOUT,
    )


def reply_of(command: Callable[[], bytes]) -> bytes:
    """Run a poplib call and return the reply line, ``+OK`` or ``-ERR``.

    :param command: The call, which raises :class:`poplib.error_proto` on
        ``-ERR``.
    :returns: The reply line without CRLF.
    """
    try:
        return command()
    except poplib.error_proto as error:
        reply = error.args[0]
        assert isinstance(reply, bytes), error
        return reply


def login_user_pass(pop: poplib.POP3, user: str, password: str) -> bytes:
    """Log in with USER and PASS.

    :param pop: A client in the AUTHORIZATION state.
    :param user: The user name.
    :param password: The password.
    :returns: The reply to PASS.
    """
    assert pop.user(user).startswith(b"+OK")
    return reply_of(lambda: pop.pass_(password))


def login_auth_plain(pop: poplib.POP3, user: str, password: str) -> bytes:
    """Log in with AUTH PLAIN and an initial response (RFC 5034).

    :param pop: A client in the AUTHORIZATION state.
    :param user: The user name.
    :param password: The password.
    :returns: The reply to AUTH.
    """
    # poplib has no AUTH command, so this sends the line with its private
    # helper, which typeshed does not declare.
    response = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    command = f"AUTH PLAIN {response}"
    return reply_of(lambda: pop._shortcmd(command))  # type: ignore[attr-defined]


LOGINS = pytest.mark.parametrize(
    "login", [login_user_pass, login_auth_plain], ids=["user-pass", "auth-plain"]
)


def combined_password(dovecot: DovecotServer) -> str:
    """Return ``vpnpass:mailpass`` for ``mailuser``.

    :param dovecot: The server whose mail password to use.
    :returns: The combined password.
    """
    return f"{VPN_PASSWORD}:{dovecot.users[MAIL_USER]}"


def message_from_lines(lines: list[bytes]) -> bytes:
    """Rebuild the message bytes from poplib's lines.

    poplib strips each CRLF and removes the dot-stuffing, so the lines only
    need their CRLF back.

    :param lines: The lines of a RETR reply.
    :returns: The message bytes.
    """
    return b"".join(line + b"\r\n" for line in lines)


@LOGINS
def test_poplib_stat_list_retr(
    start_proxy: StartProxy, dovecot: DovecotServer, login: Login
) -> None:
    proxy = start_pop3s(start_proxy, dovecot)
    pop = connect(proxy)
    try:
        reply = login(pop, f"{VPN_USER}:{MAIL_USER}", combined_password(dovecot))
        assert reply.startswith(b"+OK"), reply

        count, size = pop.stat()
        assert count == len(dovecot.messages)
        assert size == sum(len(message) for message in dovecot.messages)

        _reply, listing, _octets = pop.list()
        expected = [
            f"{number} {len(message)}".encode()
            for number, message in enumerate(dovecot.messages, start=1)
        ]
        assert listing == expected

        for number, message in enumerate(dovecot.messages, start=1):
            _reply, lines, _octets = pop.retr(number)
            assert message_from_lines(lines) == message
    finally:
        pop.quit()


def require_curl() -> str:
    """Locate ``curl``, or end the test when it is missing.

    :returns: The path of ``curl``.
    """
    found = shutil.which("curl")
    if found is None:
        unavailable("curl is not installed; run scripts/run-tests, which installs it")
    return found


def run_curl(url: str, *options: str) -> subprocess.CompletedProcess[bytes]:
    """Run curl on ``url`` with TLS verification off and no proxy.

    :param url: The URL, credentials included.
    :param options: More curl options.
    :returns: The finished process, with stdout and stderr captured.
    """
    # -q skips any ~/.curlrc, and --noproxy keeps proxy variables of the
    # environment from sending the request anywhere but 127.0.0.1.
    command = [
        require_curl(),
        "-q",
        "--silent",
        "--show-error",
        "-k",
        "--noproxy",
        "*",
        "--max-time",
        str(CURL_TIMEOUT),
        *options,
        url,
    ]
    return subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=CURL_TIMEOUT + 5,
        check=False,
    )


def pop3s_url(proxy: RunningProxy, dovecot: DovecotServer, path: str) -> str:
    """Build a ``pop3s://`` URL that carries the combined credentials.

    curl splits ``-u`` at its first colon, but the combined user name
    contains one, so the credentials go percent-encoded into the URL.

    :param proxy: The proxy to connect to.
    :param dovecot: The server whose mail password to use.
    :param path: The URL path: a message number to RETR it.
    :returns: The URL.
    """
    user = f"{VPN_USER}%3A{MAIL_USER}"
    password = f"{VPN_PASSWORD}%3A{dovecot.users[MAIL_USER]}"
    port = proxy.port_of("pop3s")
    return f"pop3s://{user}:{password}@{proxy.host}:{port}/{path}"


# curl 7.88 (Debian 12) accepts no AUTH=+LOGIN for POP3 (only +APOP), and it
# prefers SASL whenever CAPA lists any, so it never sends USER and PASS here.
@pytest.mark.parametrize(
    "login_options",
    [(), ("--login-options", "AUTH=PLAIN"), ("--login-options", "AUTH=LOGIN")],
    ids=["default", "plain", "login"],
)
def test_curl_retr_equals_message(
    start_proxy: StartProxy, dovecot: DovecotServer, login_options: tuple[str, ...]
) -> None:
    proxy = start_pop3s(start_proxy, dovecot)

    completed = run_curl(pop3s_url(proxy, dovecot, "1"), *login_options)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == dovecot.messages[0]


def test_curl_list_counts_messages(
    start_proxy: StartProxy, dovecot: DovecotServer
) -> None:
    proxy = start_pop3s(start_proxy, dovecot)

    completed = run_curl(pop3s_url(proxy, dovecot, ""))

    assert completed.returncode == 0, completed.stderr
    expected = b"".join(
        f"{number} {len(message)}\r\n".encode()
        for number, message in enumerate(dovecot.messages, start=1)
    )
    assert completed.stdout == expected


@LOGINS
def test_wrong_vpn_password_never_contacts_upstream(
    start_proxy: StartProxy, dovecot: DovecotServer, tripwire: Tripwire, login: Login
) -> None:
    servers = {"trip": tripwire.server_table()}
    proxy = start_pop3s(start_proxy, dovecot, default="trip", servers=servers)
    password = f"wrong:{dovecot.users[MAIL_USER]}"

    pop = connect(proxy)
    try:
        reply = login(pop, f"{VPN_USER}:{MAIL_USER}", password)
    finally:
        pop.quit()

    assert reply == PROXY_AUTH_FAILED
    assert tripwire.count() == 0


@LOGINS
def test_wrong_mail_password_gets_dovecot_reply(
    start_proxy: StartProxy, dovecot: DovecotServer, login: Login
) -> None:
    proxy = start_pop3s(start_proxy, dovecot)

    pop = connect(proxy)
    try:
        reply = login(pop, f"{VPN_USER}:{MAIL_USER}", f"{VPN_PASSWORD}:wrong")
    finally:
        pop.quit()

    assert reply == DOVECOT_AUTH_FAILED


def count_log_lines(dovecot: DovecotServer, service: str, text: str) -> int:
    """Count the lines of Dovecot's log from ``service`` that contain ``text``.

    :param dovecot: The server whose log to read.
    :param service: The process name that starts the message, such as
        ``pop3-login``.
    :param text: The text to look for.
    :returns: The number of matching lines.
    """
    prefix = f" {service}: "
    lines = dovecot.read_log().splitlines()
    return sum(1 for line in lines if prefix in line and text in line)


def wait_for_log_line(
    dovecot: DovecotServer, service: str, text: str, before: int
) -> None:
    """Poll Dovecot's log until more than ``before`` lines match.

    :param dovecot: The server whose log to read.
    :param service: The process name, as for :func:`count_log_lines`.
    :param text: The text to look for.
    :param before: The count of matching lines before the test acted.
    :raises AssertionError: When no new line appears within
        :data:`LOG_TIMEOUT` seconds.
    """
    deadline = time.monotonic() + LOG_TIMEOUT
    while count_log_lines(dovecot, service, text) <= before:
        assert time.monotonic() < deadline, f"no new {service} line with {text!r}"
        time.sleep(0.05)


@LOGINS
def test_unknown_server_never_contacted(
    start_proxy: StartProxy, dovecot: DovecotServer, tripwire: Tripwire, login: Login
) -> None:
    servers = {"other": tripwire.server_table()}
    proxy = start_pop3s(start_proxy, dovecot, servers=servers)
    user = f"{VPN_USER}:{MAIL_USER}@elsewhere"
    rejected = f"user=<{MAIL_USER}@elsewhere>"
    before = count_log_lines(dovecot, "pop3-login", rejected)

    pop = connect(proxy)
    try:
        reply = login(pop, user, combined_password(dovecot))
    finally:
        pop.quit()

    # "@elsewhere" names no configured server, so it stays in the mail user
    # name, and the default server rejects mailuser@elsewhere.
    assert reply == DOVECOT_AUTH_FAILED
    wait_for_log_line(dovecot, "pop3-login", rejected, before)
    assert tripwire.count() == 0


def test_curl_wrong_vpn_password_fails(
    start_proxy: StartProxy, dovecot: DovecotServer, tripwire: Tripwire
) -> None:
    servers = {"trip": tripwire.server_table()}
    proxy = start_pop3s(start_proxy, dovecot, default="trip", servers=servers)
    url = pop3s_url(proxy, dovecot, "1").replace(VPN_PASSWORD, "wrong", 1)

    completed = run_curl(url)

    # curl exits with 67 (CURLE_LOGIN_DENIED) when the server rejects a login.
    assert completed.returncode == 67, completed.stderr
    assert completed.stdout == b""
    assert tripwire.count() == 0

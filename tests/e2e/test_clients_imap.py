"""What real IMAP clients receive from the IMAP4S proxy in front of Dovecot.

curl and imaplib talk to the proxy. A :class:`~.tripwire.Tripwire` takes
the place of every configured server that a login must not contact.
"""

from __future__ import annotations

import contextlib
import imaplib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailproxy_core.proxy.config import parse_config

from .conftest import unavailable
from .dovecot import DovecotServer
from .proxyfixtures import (
    CLIENT_TIMEOUT,
    MAIL_USER,
    VPN_PASSWORD,
    VPN_USER,
    RunningProxy,
    StartProxy,
    base_document,
    running_proxy,
    write_users,
)
from .tripwire import Tripwire

pytestmark = pytest.mark.e2e

#: Seconds that one curl run may take, connect and transfer together.
CURL_TIMEOUT = 10.0

#: Seconds within which the proxy must reject a login that it checks alone.
LOCAL_REJECT_TIME = 2.0

#: Seconds to wait for Dovecot to log the end of a failed login.
LOG_TIMEOUT = 5.0

#: The proxy's own reply to a failed login: no period, unlike Dovecot's.
PROXY_AUTH_FAILED = "[AUTHENTICATIONFAILED] Authentication failed"

#: Dovecot 2.3's reply to a wrong password.
DOVECOT_AUTH_FAILED = "[AUTHENTICATIONFAILED] Authentication failed."

#: Starts a proxy from a whole configuration document.
StartDocument = Callable[[dict[str, Any]], RunningProxy]


@pytest.fixture
def start_document(tmp_path: Path) -> Iterator[StartDocument]:
    """Return a function that runs a proxy from a whole configuration document.

    :func:`~.proxyfixtures.start_proxy` can only add keys to its base
    configuration, and some tests need a key of it removed.

    :param tmp_path: Folder for the users file.
    :returns: A generator that yields the function. Every proxy it started
        stops when the test ends.
    """
    write_users(tmp_path)
    with contextlib.ExitStack() as stack:

        def start(document: dict[str, Any]) -> RunningProxy:
            config = parse_config(document, tmp_path / "proxy.toml")
            return stack.enter_context(running_proxy(config))

        yield start


@pytest.fixture
def restore_flags(dovecot: DovecotServer) -> Iterator[None]:
    """Clear ``\\Seen`` on the seeded messages after the test.

    curl fetches with ``BODY[]``, which sets ``\\Seen``, and the seeded
    messages start without flags.

    :param dovecot: The server that stores the messages.
    :returns: A generator that yields once.
    """
    yield
    with imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=CLIENT_TIMEOUT) as imap:
        imap.login(MAIL_USER, dovecot.users[MAIL_USER])
        imap.select("INBOX")
        status, data = imap.store("1:*", "-FLAGS.SILENT", r"(\Seen)")
        assert status == "OK", data


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


def imaps_url(proxy: RunningProxy, dovecot: DovecotServer, path: str) -> str:
    """Build an ``imaps://`` URL that carries the combined credentials.

    curl splits ``-u`` at its first colon, but the combined user name
    contains one, so the credentials go percent-encoded into the URL.

    :param proxy: The proxy to connect to.
    :param dovecot: The server whose mail password to use.
    :param path: The URL path, such as ``INBOX;UID=1``.
    :returns: The URL.
    """
    user = f"{VPN_USER}%3A{MAIL_USER}"
    password = f"{VPN_PASSWORD}%3A{dovecot.users[MAIL_USER]}"
    return f"imaps://{user}:{password}@{proxy.host}:{proxy.port}/{path}"


def raw_login(imap: imaplib.IMAP4, user: str, password: str) -> tuple[str, bytes]:
    """Send LOGIN and return the tagged status and text, whatever they are.

    :meth:`imaplib.IMAP4.login` raises the same error for NO and BAD, so
    this reads the tagged reply itself.

    :param imap: A client in the not-authenticated state.
    :param user: The user name.
    :param password: The password.
    :returns: The status, such as ``NO``, and the text after it.
    """
    status, data = imap._simple_command("LOGIN", user, imap._quote(password))
    text = data[-1]
    assert isinstance(text, bytes), data

    # imaplib checks its own state before each command, as login() sets it.
    if status == "OK":
        imap.state = "AUTH"
    return status, text


def fetch_first(imap: imaplib.IMAP4) -> bytes:
    """Select INBOX read-only and return message 1.

    :param imap: A logged-in client.
    :returns: The message bytes.
    """
    status, count = imap.select("INBOX", readonly=True)
    assert status == "OK", count

    status, data = imap.fetch("1", "(BODY.PEEK[])")
    assert status == "OK", data
    item = data[0]
    assert isinstance(item, tuple), data
    message = item[1]
    assert isinstance(message, bytes), data
    return message


def count_log_lines(dovecot: DovecotServer, service: str, text: str) -> int:
    """Count the lines of Dovecot's log from ``service`` that contain ``text``.

    :param dovecot: The server whose log to read.
    :param service: The process name that starts the message, such as
        ``imap-login``.
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


# curl 7.88 (Debian 12) has no AUTH=+LOGIN for the LOGIN command and exits
# with 3, so LOGIN is covered by imaplib below.
@pytest.mark.parametrize(
    "login_options",
    [(), ("--login-options", "AUTH=PLAIN"), ("--login-options", "AUTH=LOGIN")],
    ids=["default", "plain", "login"],
)
@pytest.mark.usefixtures("restore_flags")
def test_curl_fetches_seeded_message(
    imap_proxy: RunningProxy, dovecot: DovecotServer, login_options: tuple[str, ...]
) -> None:
    url = imaps_url(imap_proxy, dovecot, "INBOX;UID=1")

    completed = run_curl(url, *login_options)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == dovecot.messages[0]


def test_curl_lists_mailboxes(imap_proxy: RunningProxy, dovecot: DovecotServer) -> None:
    completed = run_curl(imaps_url(imap_proxy, dovecot, ""))

    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines, completed.stdout
    assert all(line.startswith(b"* LIST ") for line in lines), completed.stdout
    assert any(line.endswith(b" INBOX") for line in lines), completed.stdout


def test_curl_wrong_vpn_password_fails(
    start_proxy: StartProxy, dovecot: DovecotServer, tripwire: Tripwire
) -> None:
    servers = {"trip": tripwire.server_table()}
    proxy = start_proxy({"imap4s": {"default_server": "trip", "servers": servers}})
    url = imaps_url(proxy, dovecot, "INBOX;UID=1").replace(VPN_PASSWORD, "wrong", 1)

    completed = run_curl(url)

    # curl exits with 67 (CURLE_LOGIN_DENIED) when the server rejects a login.
    assert completed.returncode == 67, completed.stderr
    assert completed.stdout == b""
    assert tripwire.count() == 0


def test_tripwire_counts_upstream_connection(
    start_proxy: StartProxy, dovecot: DovecotServer, tripwire: Tripwire
) -> None:
    servers = {"trip": tripwire.server_table()}
    proxy = start_proxy({"imap4s": {"default_server": "trip", "servers": servers}})
    password = f"{VPN_PASSWORD}:{dovecot.users[MAIL_USER]}"

    with proxy.imap() as imap:
        status, text = raw_login(imap, f"{VPN_USER}:{MAIL_USER}", password)

    # Valid credentials pass the AAA check, so the proxy connects, and the
    # tripwire closes the connection before any greeting.
    assert status == "NO"
    assert text.startswith(b"[UNAVAILABLE] "), text
    assert tripwire.count() == 1


def test_wrong_vpn_password_never_contacts_upstream(
    start_proxy: StartProxy, dovecot: DovecotServer, tripwire: Tripwire
) -> None:
    servers = {"trip": tripwire.server_table()}
    proxy = start_proxy({"imap4s": {"default_server": "trip", "servers": servers}})
    user = f"{VPN_USER}:{MAIL_USER}"

    with proxy.imap() as imap:
        status, text = raw_login(imap, user, f"wrong:{dovecot.users[MAIL_USER]}")

    assert status == "NO"
    assert text == PROXY_AUTH_FAILED.encode()
    assert tripwire.count() == 0


def test_wrong_mail_password_gets_dovecot_reply(
    imap_proxy: RunningProxy,
) -> None:
    with imap_proxy.imap() as imap:
        status, text = raw_login(imap, f"{VPN_USER}:{MAIL_USER}", f"{VPN_PASSWORD}:no")

    assert status == "NO"
    assert text == DOVECOT_AUTH_FAILED.encode()


def test_named_server_is_used(
    start_proxy: StartProxy, dovecot: DovecotServer, tripwire: Tripwire
) -> None:
    servers = {"trip": tripwire.server_table()}
    proxy = start_proxy({"imap4s": {"default_server": "trip", "servers": servers}})
    user = f"{VPN_USER}:{MAIL_USER}@mail"
    password = f"{VPN_PASSWORD}:{dovecot.users[MAIL_USER]}"

    with proxy.imap() as imap:
        status, text = raw_login(imap, user, password)
        assert status == "OK", text
        assert fetch_first(imap) == dovecot.messages[0]
        imap.logout()

    assert tripwire.count() == 0


def test_unknown_server_stays_in_user_name(
    start_proxy: StartProxy, dovecot: DovecotServer, tripwire: Tripwire
) -> None:
    proxy = start_proxy({"imap4s": {"servers": {"other": tripwire.server_table()}}})
    user = f"{VPN_USER}:{MAIL_USER}@elsewhere"
    password = f"{VPN_PASSWORD}:{dovecot.users[MAIL_USER]}"
    rejected = f"user=<{MAIL_USER}@elsewhere>"
    before = count_log_lines(dovecot, "imap-login", rejected)

    with proxy.imap() as imap:
        status, text = raw_login(imap, user, password)
        imap.logout()

    # Dovecot's text, with its period, shows that the default server got the
    # login, and its log names the user that it rejected.
    assert status == "NO"
    assert text == DOVECOT_AUTH_FAILED.encode()
    wait_for_log_line(dovecot, "imap-login", rejected, before)
    assert tripwire.count() == 0


def test_no_server_fails_at_once(
    start_document: StartDocument, dovecot: DovecotServer, tripwire: Tripwire
) -> None:
    document = base_document(dovecot)
    del document["imap4s"]["default_server"]
    document["imap4s"]["servers"] = {"trip": tripwire.server_table()}
    proxy = start_document(document)
    password = f"{VPN_PASSWORD}:{dovecot.users[MAIL_USER]}"

    with proxy.imap() as imap:
        started = time.monotonic()
        status, text = raw_login(imap, f"{VPN_USER}:{MAIL_USER}", password)
        elapsed = time.monotonic() - started

    assert status == "NO"
    assert text == PROXY_AUTH_FAILED.encode()
    assert elapsed < LOCAL_REJECT_TIME
    assert tripwire.count() == 0

"""Checks of statements in README.md and docs/ against real servers.

Each test runs one documented behaviour end to end, with stock clients,
the reference proxy and the servers of the e2e fixtures, all on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import poplib
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .dovecot import DovecotServer, pick_free_ports
from .proxyfixtures import CLIENT_TIMEOUT, MAIL_USER, VPN_PASSWORD, VPN_USER, StartProxy

REPOSITORY = Path(__file__).resolve().parents[2]

#: The ``mailproxy`` command of the environment that runs the tests.
MAILPROXY = Path(sys.executable).with_name("mailproxy")

#: Seconds that a ``mailproxy`` subprocess may take to start or to stop.
PROCESS_TIMEOUT = 15.0

#: Worker threads of asyncio's default executor, which runs the blocking
#: LDAP and users-file checks (the ThreadPoolExecutor default of Python 3.11).
DEFAULT_EXECUTOR_WORKERS = min(32, (os.cpu_count() or 1) + 4)


def unverified_context() -> ssl.SSLContext:
    """Build a client context for the proxy's throwaway certificates.

    :returns: A context that skips certificate and host name checks.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@contextlib.contextmanager
def silent_tcp_server() -> Iterator[int]:
    """Accept TCP connections on 127.0.0.1 and never send a byte.

    Closing the accepted connections at the end releases any client that
    still waits for a reply.

    :returns: A context manager that yields the listening port.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept_until_stopped() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                connection, _ = listener.accept()
                accepted.append(connection)

    thread = threading.Thread(target=accept_until_stopped, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(PROCESS_TIMEOUT)
        for connection in accepted:
            connection.close()
        listener.close()


def pop3_login(port: int, mail_password: str) -> bool:
    """Log in to a POP3S listener of the proxy as vpnuser.

    :param port: The listener's port on 127.0.0.1.
    :param mail_password: The password of :data:`MAIL_USER`.
    :returns: Whether the login succeeded.
    """
    client = poplib.POP3_SSL(
        "127.0.0.1", port, context=unverified_context(), timeout=CLIENT_TIMEOUT
    )
    try:
        client.user(f"{VPN_USER}:{MAIL_USER}")
        client.pass_(f"{VPN_PASSWORD}:{mail_password}")
    except poplib.error_proto:
        return False
    finally:
        client.close()
    return True


def imap_login(proxy_port: int, mail_password: str) -> str:
    """Log in to an IMAP4S listener of the proxy as vpnuser and log out.

    :param proxy_port: The listener's port on 127.0.0.1.
    :param mail_password: The password of :data:`MAIL_USER`.
    :returns: ``OK``, or the text of the failure.
    """
    client = imaplib.IMAP4_SSL(
        "127.0.0.1",
        proxy_port,
        ssl_context=unverified_context(),
        timeout=CLIENT_TIMEOUT,
    )
    try:
        status, _ = client.login(
            f"{VPN_USER}:{MAIL_USER}", f"{VPN_PASSWORD}:{mail_password}"
        )
        client.logout()
    except imaplib.IMAP4.error as error:
        return str(error)
    return status


def test_hung_ldaps_server_spares_local_logins(
    start_proxy: StartProxy, dovecot: DovecotServer
) -> None:
    """An LDAPS server that never replies must not stop other AAA groups.

    docs/aaa.rst: "``timeout`` (seconds, default 5) bounds a whole login,
    and libldap also gets it as its connect and operation timeout." A
    server that accepts TCP but never completes the TLS handshake holds
    each login's worker thread past that timeout, so once every worker of
    the default executor waits there, logins of the ``local`` group fail
    too.
    """
    pytest.importorskip("ldap")
    mail_password = dovecot.users[MAIL_USER]
    with silent_tcp_server() as ldap_port:
        proxy = start_proxy(
            {
                "aaa": {
                    "hung": {
                        "type": "ldap",
                        "url": f"ldaps://127.0.0.1:{ldap_port}",
                        "base_dn": "dc=example,dc=org",
                        "timeout": 1,
                    }
                },
                "pop3s": {
                    "listen": "127.0.0.1:0",
                    "authentication_server_group": "hung",
                    "default_server": "mail",
                    "outstanding": 0,
                    "servers": {
                        "mail": {"host": dovecot.host, "port": dovecot.pop3_port}
                    },
                },
            }
        )
        pop3_port = proxy.port_of("pop3s")
        attempts = DEFAULT_EXECUTOR_WORKERS + 1

        with ThreadPoolExecutor(attempts) as pool:
            results = list(
                pool.map(
                    lambda _: pop3_login(pop3_port, mail_password), range(attempts)
                )
            )
        assert not any(results), "a login passed an LDAP server that never replies"

        # The LDAP logins have failed, so a users-file login must work again.
        assert imap_login(proxy.port, mail_password) == "OK"


def test_replay_wrong_protocol_reports_error(tmp_path: Path) -> None:
    """``mailproxy replay`` reports a transcript that does not fit its session.

    An answer such as ``= aaa ok`` without a pending check is a mistake in
    the transcript, so the command should name it like its other input
    errors (exit status 2, one ``mailproxy:`` line) instead of a traceback.
    """
    if not MAILPROXY.exists():
        pytest.skip(f"{MAILPROXY} is not installed")
    transcript = tmp_path / "stray-answer.txt"
    transcript.write_text("! protocol=imap4s\n= start\n= aaa ok\n", encoding="utf-8")

    completed = subprocess.run(
        [str(MAILPROXY), "replay", str(transcript)],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )

    assert "Traceback" not in completed.stderr
    assert completed.returncode == 2
    assert completed.stderr.startswith("mailproxy:")


def test_replay_shipped_transcript_with_other_protocol(tmp_path: Path) -> None:
    """Replaying an IMAP transcript as SMTPS ends with an error, not a traceback."""
    if not MAILPROXY.exists():
        pytest.skip(f"{MAILPROXY} is not installed")
    transcript = REPOSITORY / "tests" / "transcripts" / "imap" / "login_relay.txt"

    completed = subprocess.run(
        [str(MAILPROXY), "replay", "--protocol", "smtps", str(transcript)],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
        cwd=tmp_path,
    )

    assert "Traceback" not in completed.stderr
    assert completed.returncode == 2


def wait_for_port(port: int, process: subprocess.Popen[str]) -> None:
    """Wait until ``process`` accepts TCP connections on ``port``.

    :param port: The port on 127.0.0.1.
    :param process: The ``mailproxy serve`` process.
    :raises AssertionError: When the process exits or does not listen within
        :data:`PROCESS_TIMEOUT` seconds.
    """
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, "mailproxy serve exited during start-up"
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), 1.0).close()
            return
        time.sleep(0.05)
    raise AssertionError(f"mailproxy serve did not listen on {port}")


def test_accounting_record_in_file_and_log(
    tmp_path: Path, dovecot: DovecotServer
) -> None:
    """The accounting record goes to ``accounting_file`` and, at INFO, to the log."""
    if not MAILPROXY.exists():
        pytest.skip(f"{MAILPROXY} is not installed")
    (port,) = pick_free_ports(1)
    config = tmp_path / "proxy.toml"
    config.write_text(
        'accounting_file = "accounting.jsonl"\n'
        "drain_timeout = 2\n"
        "[logging]\n"
        'level = "INFO"\n'
        "[imap4s]\n"
        f'listen = "127.0.0.1:{port}"\n'
        'authentication = ["mailhost"]\n'
        'default_server = "mail"\n'
        "[imap4s.servers.mail]\n"
        f'host = "{dovecot.host}"\n'
        f"port = {dovecot.imap_port}\n",
        encoding="utf-8",
    )

    process = subprocess.Popen(
        [str(MAILPROXY), "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, process)
        client = imaplib.IMAP4_SSL(
            "127.0.0.1", port, ssl_context=unverified_context(), timeout=CLIENT_TIMEOUT
        )
        client.login(MAIL_USER, dovecot.users[MAIL_USER])
        client.logout()
        time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=PROCESS_TIMEOUT)

    records = (tmp_path / "accounting.jsonl").read_text(encoding="utf-8")
    assert '"mail_user":"mailuser"' in records.replace(" ", "")
    assert "accounting" in stderr

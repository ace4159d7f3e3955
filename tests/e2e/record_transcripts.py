"""Re-record the ``real-*`` transcripts under ``tests/transcripts``.

Each recording runs a stock client (imaplib, poplib, smtplib, curl or swaks)
without TLS against a :class:`~tests.e2e.recorder.Recorder`, which drives a
core session in front of a throwaway Dovecot or Postfix on 127.0.0.1.
``tests/test_transcripts.py`` then replays the files against the core alone.

Run it as root from the repository root, because Dovecot and Postfix need
root to start::

    .venv/bin/python -m tests.e2e.record_transcripts

It needs dovecot-imapd, dovecot-pop3d, dovecot-lmtpd, postfix, curl and
swaks, and it overwrites the existing ``real-*`` files.
"""

from __future__ import annotations

import datetime
import imaplib
import os
import platform
import poplib
import shutil
import smtplib
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from .dovecot import USERS, DovecotServer, find_dovecot, running_dovecot
from .inbox import take_delivered
from .postfix import DOMAIN, PostfixServer, find_postfix, running_postfix
from .recorder import HOST, VPN_PASSWORD, VPN_USER, Recorder, RecordingError

FOLDER = Path(__file__).resolve().parent.parent / "transcripts"

MAIL_USER = "mailuser"
LOGIN_USER = f"{VPN_USER}:{MAIL_USER}"
LOGIN_PASSWORD = f"{VPN_PASSWORD}:{USERS[MAIL_USER]}"
WRONG_LOGIN_PASSWORD = f"wrongpass:{USERS[MAIL_USER]}"
ADDRESS = f"{MAIL_USER}@{DOMAIN}"

#: The EHLO name of the SMTP clients, instead of this machine's host name.
CLIENT_HOSTNAME = "client.example"

#: Seconds that a client may take for its whole conversation.
CLIENT_TIMEOUT = 20.0

#: Prefix of the temporary folders of Dovecot and Postfix.
RUN_PREFIX = "mailproxy-record-"


@dataclass(frozen=True, slots=True, kw_only=True)
class Servers:
    """The running upstream servers and their versions for the headers."""

    dovecot: DovecotServer
    postfix: PostfixServer
    dovecot_version: str
    postfix_version: str

    def upstream(self, protocol: str) -> tuple[int, str]:
        """Return the port and the description of one protocol's upstream.

        :param protocol: ``imap``, ``pop3`` or ``smtp``.
        """
        if protocol == "imap":
            return self.dovecot.imap_port, f"Dovecot {self.dovecot_version} IMAP"
        if protocol == "pop3":
            return self.dovecot.pop3_port, f"Dovecot {self.dovecot_version} POP3"
        description = (
            f"Postfix {self.postfix_version} submission, "
            f"SASL by Dovecot {self.dovecot_version}"
        )
        return self.postfix.submission_port, description


@dataclass(frozen=True, slots=True, kw_only=True)
class Recording:
    """One conversation to record.

    :param path: The transcript's path below ``tests/transcripts``, which
        starts with the protocol's folder.
    :param client: The client's name, a key of :func:`client_versions`.
    :param summary: What the client does, for the header.
    :param run: Runs the client against the recorder's port.
    :param message_id: The Message-ID of the message that the client
        submits, which is removed from the INBOX afterwards, or ``None``.
    """

    path: str
    client: str
    summary: str
    run: Callable[[int], None]
    message_id: str | None = None

    @property
    def protocol(self) -> str:
        """The folder name of the transcript: ``imap``, ``pop3`` or ``smtp``."""
        return self.path.partition("/")[0]


# Clients -----------------------------------------------------------------


def run_command(arguments: list[str]) -> bytes:
    """Run a client program and return its standard output.

    :param arguments: The command line.
    :raises RecordingError: When it fails or takes longer than
        :data:`CLIENT_TIMEOUT` seconds.
    """
    try:
        completed = subprocess.run(
            arguments,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=CLIENT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise RecordingError(f"{arguments[0]} timed out") from error

    if completed.returncode != 0:
        stderr = completed.stderr.decode(errors="replace")
        message = f"{arguments[0]} exited with {completed.returncode}: {stderr}"
        raise RecordingError(message)
    return completed.stdout


def expect(condition: bool, message: str) -> None:
    """Raise :class:`RecordingError` with ``message`` unless ``condition``."""
    if not condition:
        raise RecordingError(message)


def imaplib_fetch(port: int) -> None:
    """Log in, list the folders, select INBOX, fetch message 1, log out."""
    with imaplib.IMAP4(HOST, port, timeout=CLIENT_TIMEOUT) as imap:
        imap.login(LOGIN_USER, LOGIN_PASSWORD)
        imap.list()
        imap.select("INBOX")

        # BODY.PEEK[] leaves the \Seen flag alone, so later recordings see
        # the INBOX unchanged.
        status, data = imap.fetch("1", "(BODY.PEEK[])")
        expect(status == "OK", f"FETCH failed: {data!r}")
        imap.logout()


def imaplib_wrong_password(port: int) -> None:
    """Log in with a wrong VPN password, then with the right one."""
    with imaplib.IMAP4(HOST, port, timeout=CLIENT_TIMEOUT) as imap:
        try:
            imap.login(LOGIN_USER, WRONG_LOGIN_PASSWORD)
        except imaplib.IMAP4.error:
            pass
        else:
            raise RecordingError("the login with a wrong VPN password succeeded")

        imap.login(LOGIN_USER, LOGIN_PASSWORD)
        imap.logout()


def curl_url(scheme: str, port: int, path: str) -> str:
    """Build a curl URL with the combined credentials in its user part.

    curl splits ``--user`` at the first colon, so the colons of the combined
    credentials go percent-encoded into the URL instead.
    """
    user = LOGIN_USER.replace(":", "%3A")
    password = LOGIN_PASSWORD.replace(":", "%3A")
    return f"{scheme}://{user}:{password}@{HOST}:{port}/{path}"


def curl(url: str) -> bytes:
    """Run curl on ``url`` and return what it wrote to standard output.

    ``-q`` skips ``~/.curlrc`` and ``--noproxy`` any proxy from the
    environment, so curl talks to the recorder alone.
    """
    arguments = ["curl", "-q", "--silent", "--show-error", "--noproxy", "*"]
    arguments += ["--max-time", str(int(CLIENT_TIMEOUT)), "--url", url]
    return run_command(arguments)


def curl_imap_fetch(port: int) -> None:
    """Fetch the message with UID 1 from INBOX."""
    output = curl(curl_url("imap", port, "INBOX;UID=1"))
    expect(b"First test message" in output, f"curl fetched {output[:80]!r}")


def curl_pop3_retr(port: int) -> None:
    """Retrieve message 1."""
    output = curl(curl_url("pop3", port, "1"))
    expect(b"First test message" in output, f"curl retrieved {output[:80]!r}")


def poplib_retr(port: int) -> None:
    """Log in with USER and PASS, then STAT, LIST, RETR 1 and QUIT."""
    pop = poplib.POP3(HOST, port, timeout=CLIENT_TIMEOUT)
    try:
        pop.user(LOGIN_USER)
        pop.pass_(LOGIN_PASSWORD)
        pop.stat()
        pop.list()
        pop.retr(1)
        pop.quit()
    finally:
        pop.close()


def message_for(client: str, message_id: str) -> bytes:
    """Build a short message from and to :data:`ADDRESS`.

    Its body has a line that starts with a dot, which SMTP dot-stuffs.
    """
    header = (
        f"From: <{ADDRESS}>\r\nTo: <{ADDRESS}>\r\n"
        f"Subject: Recorded with {client}\r\nMessage-ID: {message_id}\r\n\r\n"
    )
    body = f"Sent through the core by {client}.\r\n.A line that starts with a dot.\r\n"
    return header.encode() + body.encode()


SMTPLIB_MESSAGE_ID = "<real-smtplib@mailproxy.test>"
SWAKS_MESSAGE_ID = "<real-swaks@mailproxy.test>"


def smtplib_sendmail(port: int) -> None:
    """Send EHLO, log in, send one message to :data:`ADDRESS`, then QUIT."""
    message = message_for("smtplib", SMTPLIB_MESSAGE_ID)
    with smtplib.SMTP(
        HOST, port, local_hostname=CLIENT_HOSTNAME, timeout=CLIENT_TIMEOUT
    ) as smtp:
        smtp.ehlo()
        smtp.login(LOGIN_USER, LOGIN_PASSWORD)
        refused = smtp.sendmail(ADDRESS, [ADDRESS], message)
        expect(refused == {}, f"Postfix refused {refused!r}")
        smtp.quit()


def swaks_auth_plain(port: int) -> None:
    """Send swaks's default message with AUTH PLAIN and without TLS."""
    arguments = ["swaks", "--server", f"{HOST}:{port}", "--ehlo", CLIENT_HOSTNAME]
    arguments += ["--from", ADDRESS, "--to", ADDRESS, "--auth", "PLAIN"]
    arguments += ["--auth-user", LOGIN_USER, "--auth-password", LOGIN_PASSWORD]
    # A fixed Message-Id, so that the delivered copy can be found and deleted.
    arguments += ["--header", f"Message-Id: {SWAKS_MESSAGE_ID}"]
    arguments += ["--timeout", f"{int(CLIENT_TIMEOUT)}s"]
    run_command(arguments)


RECORDINGS = (
    Recording(
        path="imap/real-imaplib-fetch.txt",
        client="imaplib",
        summary="LOGIN, LIST, SELECT INBOX, FETCH 1 (BODY.PEEK[]) and LOGOUT.",
        run=imaplib_fetch,
    ),
    Recording(
        path="imap/real-imaplib-wrong-vpn-password.txt",
        client="imaplib",
        summary="LOGIN with a wrong VPN password, LOGIN with the right one, LOGOUT.",
        run=imaplib_wrong_password,
    ),
    Recording(
        path="imap/real-curl-fetch-uid.txt",
        client="curl",
        summary="imap://.../INBOX;UID=1, which logs in with AUTHENTICATE PLAIN.",
        run=curl_imap_fetch,
    ),
    Recording(
        path="pop3/real-poplib-retr.txt",
        client="poplib",
        summary="USER, PASS, STAT, LIST, RETR 1 and QUIT.",
        run=poplib_retr,
    ),
    Recording(
        path="pop3/real-curl-retr.txt",
        client="curl",
        summary="pop3://.../1, which sends RETR 1.",
        run=curl_pop3_retr,
    ),
    Recording(
        path="smtp/real-smtplib-sendmail.txt",
        client="smtplib",
        summary=f"EHLO, AUTH PLAIN, one message to {ADDRESS} and QUIT.",
        run=smtplib_sendmail,
        message_id=SMTPLIB_MESSAGE_ID,
    ),
    Recording(
        path="smtp/real-swaks-auth-plain.txt",
        client="swaks",
        summary=f"swaks --auth PLAIN without TLS, one message to {ADDRESS}.",
        run=swaks_auth_plain,
        message_id=SWAKS_MESSAGE_ID,
    ),
)


# Versions and headers ----------------------------------------------------


def command_output(arguments: list[str]) -> str:
    """Run a version command and return its first output line."""
    output = run_command(arguments).decode(errors="replace").strip()
    return output.splitlines()[0] if output else ""


def client_versions() -> dict[str, str]:
    """Describe each client with its version, for the headers.

    :returns: The description of each client, keyed by its name.
    """
    python = f"Python {platform.python_version()}"
    # "curl 7.88.1 (x86_64-pc-linux-gnu) libcurl/7.88.1 ..."
    curl_version = command_output(["curl", "--version"]).split()[1]
    # "swaks version 20201014.0"
    swaks_version = command_output(["swaks", "--version"]).split()[-1]
    return {
        "imaplib": f"{python} imaplib",
        "poplib": f"{python} poplib",
        "smtplib": f"{python} smtplib",
        "curl": f"curl {curl_version}",
        "swaks": f"swaks {swaks_version}",
    }


def header_for(
    recording: Recording, server: str, versions: dict[str, str]
) -> list[str]:
    """Build the comment lines at the top of a recorded transcript."""
    today = datetime.date.today().isoformat()
    return [
        f"Recorded on {today} by tests/e2e/record_transcripts.py: a real client",
        "talked through the core to a real server, both on 127.0.0.1.",
        f"Client: {versions[recording.client]}",
        f"Server: {server}",
        recording.summary,
        f"Credentials: {LOGIN_USER} / {LOGIN_PASSWORD}; the recorder's AAA",
        f"check accepts {VPN_USER} / {VPN_PASSWORD} only.",
    ]


# Recording ---------------------------------------------------------------


def record(recording: Recording, servers: Servers, versions: dict[str, str]) -> Path:
    """Record one conversation and write its transcript.

    :returns: The transcript's path.
    :raises RecordingError: When the client or the recorder fails.
    """
    port, server = servers.upstream(recording.protocol)
    with Recorder(recording.protocol, port) as recorder:
        recording.run(recorder.port)

    # Deleting the delivered copy leaves the INBOX as seeded, so the
    # recordings that follow see the same mailbox on every run.
    if recording.message_id is not None:
        take_delivered(servers.dovecot, MAIL_USER, recording.message_id)

    path = FOLDER / recording.path
    text = recorder.transcript(header_for(recording, server, versions))
    path.write_text(text, encoding="utf-8")
    return path


@contextmanager
def running_servers() -> Iterator[Servers]:
    """Run Dovecot and Postfix in fresh temporary folders until the block ends.

    :raises RecordingError: When either is not installed.
    """
    dovecot_binary = find_dovecot()
    postfix_binary = find_postfix()
    if dovecot_binary is None or postfix_binary is None:
        raise RecordingError("install dovecot-imapd, dovecot-pop3d and postfix")

    with ExitStack() as stack:
        # The Dovecot and Postfix daemons drop root before they read their
        # folders, so the folders must be searchable by every user.
        dovecot_root = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix=RUN_PREFIX))
        )
        dovecot_root.chmod(0o711)
        dovecot = stack.enter_context(running_dovecot(dovecot_binary, dovecot_root))
        if dovecot.lmtp_socket is None:
            raise RecordingError("install dovecot-lmtpd, which delivers Postfix's mail")

        postfix_root = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix=RUN_PREFIX))
        )
        postfix_root.chmod(0o755)
        postfix = stack.enter_context(
            running_postfix(
                postfix_binary, postfix_root, dovecot.auth_socket, dovecot.lmtp_socket
            )
        )
        yield Servers(
            dovecot=dovecot,
            postfix=postfix,
            dovecot_version=command_output([dovecot_binary, "--version"]),
            postfix_version=command_output(["postconf", "-d", "-h", "mail_version"]),
        )


def main() -> int:
    """Record every transcript of :data:`RECORDINGS`.

    :returns: The exit status.
    """
    if os.geteuid() != 0:
        print("run this script as root: Dovecot and Postfix need it", file=sys.stderr)
        return 1
    for program in ("curl", "swaks"):
        if shutil.which(program) is None:
            print(f"{program} is not installed", file=sys.stderr)
            return 1

    versions = client_versions()
    with running_servers() as servers:
        for recording in RECORDINGS:
            path = record(recording, servers, versions)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

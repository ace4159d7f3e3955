"""Run a throwaway Dovecot IMAP and POP3 server on 127.0.0.1 for tests.

The server gets its own configuration, runtime directories, mail homes and
log in one folder, and listens without TLS on two free high ports, so the
tests never touch the system's Dovecot configuration or well-known ports.
For a Postfix instance in front of it, it also serves LMTP and SASL
authentication on Unix sockets in that folder. Given an OAuth 2.0 token
introspection URL, it also accepts bearer tokens with XOAUTH2 and
OAUTHBEARER, checked by the oauth2 passdb.
Written against Dovecot 2.3 (Debian 12 ships 2.3.19): setting names such as
``disable_plaintext_auth`` changed in 2.4.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"

USERS: Mapping[str, str] = {"mailuser": "mailpass", "otheruser": "otherpass"}

# Owner of the mail homes and of the IMAP and POP3 processes. Dovecot will not
# run mail processes as root, and a static userdb needs no passwd entry, so a
# fixed numeric uid and gid, which Debian assigns to no account by default,
# keep the test mail apart from real users' files.
MAIL_UID = 61000
MAIL_GID = 61000

# Dovecot's LMTP server, from the dovecot-lmtpd package, at Debian's path.
LMTP_BINARY = Path("/usr/lib/dovecot/lmtp")

# Postfix's smtpd and lmtp clients run as this user, so it gets the LMTP and
# auth sockets when it exists.
POSTFIX_USER = "postfix"

STARTUP_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 10.0

# RFC 5322 messages with CRLF line endings, seeded into mailuser's INBOX in
# this order. The line that starts with a dot needs dot-stuffing in POP3.
MESSAGES: tuple[bytes, ...] = (
    b"From: Alice Example <alice@example.org>\r\n"
    b"To: Mail User <mailuser@example.org>\r\n"
    b"Subject: First test message\r\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <first@mailproxy.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"\r\n"
    b"Hello, this is the first test message.\r\n"
    b".This line starts with a dot.\r\n"
    b"\r\n"
    b"Alice\r\n",
    b"From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.org>\r\n"
    b"To: Mail User <mailuser@example.org>\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Date: Tue, 02 Jan 2024 11:30:00 +0100\r\n"
    b"Message-ID: <second@mailproxy.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    + "Grüße aus Köln, 東京 und Zürich.\r\n".encode()
    + "Straße, naïve, café: ✓\r\n".encode(),
)

# Arrival times (Unix seconds) of MESSAGES. They name the Maildir files, and
# Dovecot reports the file modification time as the IMAP INTERNALDATE.
ARRIVAL_TIMES = (1704103200, 1704191400)

CONFIG_TEMPLATE = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
listen = {host}
protocols = {protocols}
ssl = no
disable_plaintext_auth = no
# The proxy runs on 127.0.0.1, and only a trusted peer may pass the client's
# address with IMAP ID or POP3 XCLIENT. Trust also lifts the plaintext-auth
# restriction, which disable_plaintext_auth already turns off.
login_trusted_networks = 127.0.0.0/8
auth_mechanisms = {auth_mechanisms}
# Cuts the reply to a failed login from the default 2 s to about 0.5 s
# (measured with Dovecot 2.3.19, which keeps that floor even at 0).
auth_failure_delay = 0
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_location = maildir:~/Maildir

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
{passwd_mechanisms}}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}

service imap-login {{
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
# Every test client connects from 127.0.0.1, so the anvil auth penalty would
# delay each login after a failed one by up to 15 s. Mode 0 turns it off.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}

# SASL authentication for Postfix (smtpd_sasl_type = dovecot). Postfix speaks
# the auth client protocol, which Dovecot serves on this listener because its
# name does not end in -userdb (those get the userdb protocol). Listener paths
# are relative to base_dir.
service auth {{
  unix_listener auth-postfix {{
{socket_owner}  }}
}}
"""

# Only used when dovecot-lmtpd is installed, because Dovecot refuses to start
# with a protocol whose binary is missing.
LMTP_TEMPLATE = """
service lmtp {{
  unix_listener lmtp-postfix {{
{socket_owner}  }}
}}
# Postfix passes full addresses such as mailuser@example.org, but the users
# in the password file have no domain.
protocol lmtp {{
  auth_username_format = %n
}}
"""


# Only used when an introspection URL is given. Each passdb serves only its
# own mechanisms, so a bearer token is never compared with a password and a
# password never goes to the introspection endpoint. The password file also
# serves lookups without a mechanism ("none"), which the static userdb makes
# for LMTP deliveries.
OAUTH2_PASSDB_TEMPLATE = """
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {oauth2_config}
}}
"""

# Settings of the oauth2 passdb (Dovecot 2.3 reads them from the file named
# in args). It posts ``token=...`` to the URL (RFC 7662 section 2.1), takes
# the user name from ``username``, which must equal the login's user name,
# and requires ``"active": true``.
OAUTH2_CONFIG_TEMPLATE = """\
introspection_mode = post
introspection_url = {introspection_url}
username_attribute = username
active_attribute = active
active_value = true
"""


class DovecotError(RuntimeError):
    """Dovecot failed to start or to stop."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DovecotServer:
    """A running Dovecot instance and the test data it serves.

    :ivar host: Address that both listeners are bound to.
    :ivar imap_port: Port of the plaintext IMAP listener.
    :ivar pop3_port: Port of the plaintext POP3 listener.
    :ivar users: Password of each user, keyed by user name.
    :ivar messages: Exact bytes of the messages in mailuser's INBOX, in
        sequence-number order.
    :ivar log_path: Dovecot's log file.
    :ivar auth_socket: Unix socket for ``smtpd_sasl_type = dovecot``, owned by
        the ``postfix`` user when that user exists.
    :ivar lmtp_socket: Unix socket of the LMTP server, which delivers
        ``USER@example.org`` into USER's INBOX, or ``None`` when
        dovecot-lmtpd is not installed.
    """

    host: str
    imap_port: int
    pop3_port: int
    users: Mapping[str, str]
    messages: tuple[bytes, ...]
    log_path: Path
    auth_socket: Path
    lmtp_socket: Path | None

    def read_log(self) -> str:
        """Read Dovecot's log as written so far.

        :returns: The log text, or an empty string before the first entry.
        """
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def find_dovecot() -> str | None:
    """Locate the ``dovecot`` binary.

    :returns: Its path, or ``None`` when Dovecot is not installed.
    """
    found = shutil.which("dovecot")
    if found is not None:
        return found

    # /usr/sbin is missing from PATH for many non-root shells.
    fallback = Path("/usr/sbin/dovecot")
    return str(fallback) if fallback.exists() else None


def pick_free_ports(count: int) -> list[int]:
    """Ask the kernel for distinct free TCP ports on :data:`HOST`.

    All sockets stay bound until every port is known, so the ports differ.
    Another process may still take one before Dovecot binds it.

    :param count: Number of ports to return.
    :returns: The port numbers.
    """
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


def socket_owner_settings() -> str:
    """Build the listener settings that hand a socket to Postfix.

    :returns: Indented ``user``, ``group`` and ``mode`` lines, or an empty
        string when no ``postfix`` user exists, which leaves the socket to
        root alone.
    """
    try:
        entry = pwd.getpwnam(POSTFIX_USER)
    except KeyError:
        return ""

    group = grp.getgrgid(entry.pw_gid).gr_name
    return f"    user = {POSTFIX_USER}\n    group = {group}\n    mode = 0660\n"


def write_config(
    root: Path,
    imap_port: int,
    pop3_port: int,
    *,
    lmtp: bool = False,
    introspection_url: str | None = None,
) -> Path:
    """Write the Dovecot configuration and the password file into ``root``.

    :param root: Folder that contains everything of this instance.
    :param imap_port: Port for the IMAP listener.
    :param pop3_port: Port for the POP3 listener.
    :param lmtp: Whether to serve LMTP, which needs dovecot-lmtpd.
    :param introspection_url: OAuth 2.0 token introspection endpoint for the
        oauth2 passdb, which then checks XOAUTH2 and OAUTHBEARER logins, or
        ``None`` for PLAIN and LOGIN alone.
    :returns: Path of the configuration file.
    """
    passwd_lines = [f"{user}:{{PLAIN}}{password}\n" for user, password in USERS.items()]
    (root / "passwd").write_text("".join(passwd_lines), encoding="utf-8")

    owner = socket_owner_settings()
    oauth2 = introspection_url is not None
    config = CONFIG_TEMPLATE.format(
        root=root,
        host=HOST,
        protocols="imap pop3 lmtp" if lmtp else "imap pop3",
        auth_mechanisms="plain login xoauth2 oauthbearer" if oauth2 else "plain login",
        passwd_mechanisms="  mechanisms = plain login none\n" if oauth2 else "",
        uid=MAIL_UID,
        gid=MAIL_GID,
        imap_port=imap_port,
        pop3_port=pop3_port,
        socket_owner=owner,
    )
    if lmtp:
        config += LMTP_TEMPLATE.format(socket_owner=owner)
    if introspection_url is not None:
        config += write_oauth2_config(root, introspection_url)
    config_path = root / "dovecot.conf"
    config_path.write_text(config, encoding="utf-8")
    return config_path


def write_oauth2_config(root: Path, introspection_url: str) -> str:
    """Write the oauth2 passdb's settings file into ``root``.

    :param root: Folder that contains everything of this instance.
    :param introspection_url: The token introspection endpoint.
    :returns: The passdb block that reads the file, for dovecot.conf.
    """
    oauth2_config = root / "dovecot-oauth2.conf.ext"
    text = OAUTH2_CONFIG_TEMPLATE.format(introspection_url=introspection_url)
    oauth2_config.write_text(text, encoding="utf-8")
    return OAUTH2_PASSDB_TEMPLATE.format(oauth2_config=oauth2_config)


def seed_maildir(home: Path, messages: Sequence[bytes]) -> None:
    """Create a Maildir under ``home`` whose INBOX contains ``messages``.

    :param home: Home folder of the user, created if missing.
    :param messages: Raw messages, stored in this order.
    """
    maildir = home / "Maildir"
    for part in ("cur", "new", "tmp"):
        (maildir / part).mkdir(parents=True, exist_ok=True)

    # The ":2," suffix with no flag letters stores the messages without \Seen.
    for index, (message, arrival) in enumerate(
        zip(messages, ARRIVAL_TIMES, strict=True), start=1
    ):
        path = maildir / "cur" / f"{arrival}.M{index}P1.mailproxy-test:2,"
        path.write_bytes(message)
        os.utime(path, (arrival, arrival))


def chown_tree(top: Path, uid: int, gid: int) -> None:
    """Give ``top`` and everything below it to ``uid`` and ``gid``.

    :param top: Folder to change.
    :param uid: New owner.
    :param gid: New group.
    """
    os.chown(top, uid, gid)
    for folder, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            os.chown(Path(folder) / name, uid, gid)


def prepare_homes(root: Path) -> None:
    """Create a home for every user and seed mailuser's INBOX.

    :param root: Folder that contains everything of this instance.
    """
    for user in USERS:
        (root / "home" / user).mkdir(parents=True)
    seed_maildir(root / "home" / "mailuser", MESSAGES)
    chown_tree(root / "home", MAIL_UID, MAIL_GID)


def start_dovecot(binary: str, config_path: Path, output_path: Path) -> None:
    """Start Dovecot, which detaches into the background.

    stdout and stderr go to a file because the daemon keeps them open, so a
    pipe would never reach end of file.

    :param binary: Path of the ``dovecot`` binary.
    :param config_path: Configuration file to use.
    :param output_path: File for the output of the start command.
    :raises DovecotError: When the start command fails.
    """
    with output_path.open("wb") as output:
        completed = subprocess.run(
            [binary, "-c", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=STARTUP_TIMEOUT,
            check=False,
        )

    if completed.returncode != 0:
        output_text = output_path.read_text(errors="replace")
        message = f"dovecot exited with {completed.returncode}: {output_text}"
        raise DovecotError(message)


def accepts_connections(port: int) -> bool:
    """Check whether a TCP connection to ``port`` on :data:`HOST` succeeds.

    :param port: Port to try.
    :returns: ``True`` when the connection was accepted.
    """
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_until_listening(pid_path: Path, ports: Sequence[int], log: Path) -> None:
    """Wait until Dovecot wrote its PID file and accepts on every port.

    :param pid_path: The ``master.pid`` file in Dovecot's ``base_dir``.
    :param ports: Ports that must accept connections.
    :param log: Dovecot's log, quoted in the error.
    :raises DovecotError: When that takes longer than
        :data:`STARTUP_TIMEOUT` seconds.
    """
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if pid_path.exists() and all(accepts_connections(port) for port in ports):
            return
        time.sleep(0.05)

    log_text = log.read_text(errors="replace") if log.exists() else "(no log)"
    message = (
        f"dovecot did not listen on {HOST} ports {list(ports)} within "
        f"{STARTUP_TIMEOUT} s. Log:\n{log_text}"
    )
    raise DovecotError(message)


def is_running(pid: int) -> bool:
    """Check whether process ``pid`` exists and is not a zombie.

    :param pid: Process to check.
    :returns: ``True`` while the process runs.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False

    # The state letter follows the command name, which is in parentheses.
    state = stat.rpartition(")")[2].split()[0]
    return state != "Z"


def stop_dovecot(pid_path: Path) -> None:
    """Send SIGTERM to the Dovecot master and wait until it has exited.

    The master stops its child processes before it exits.

    :param pid_path: The ``master.pid`` file in Dovecot's ``base_dir``.
    :raises DovecotError: When the master is still running after
        :data:`SHUTDOWN_TIMEOUT` seconds, in which case it gets SIGKILL.
    """
    if not pid_path.exists():
        return
    pid = int(pid_path.read_text().strip())
    os.kill(pid, signal.SIGTERM)

    deadline = time.monotonic() + SHUTDOWN_TIMEOUT
    while time.monotonic() < deadline:
        if not is_running(pid):
            return
        time.sleep(0.05)

    os.kill(pid, signal.SIGKILL)
    message = f"dovecot (PID {pid}) ignored SIGTERM for {SHUTDOWN_TIMEOUT} s"
    raise DovecotError(message)


@contextmanager
def running_dovecot(
    binary: str, root: Path, *, introspection_url: str | None = None
) -> Iterator[DovecotServer]:
    """Run Dovecot from a fresh configuration in ``root`` until the block ends.

    Must run as root, because Dovecot switches the mail processes to
    :data:`MAIL_UID` and chroots the login processes.

    :param binary: Path of the ``dovecot`` binary.
    :param root: Empty folder for configuration, state, mail and log. Every
        user needs search permission on all of its parents, because the mail
        and login processes drop root before they open files below it.
    :param introspection_url: OAuth 2.0 token introspection endpoint that
        checks XOAUTH2 and OAUTHBEARER logins, or ``None`` to offer PLAIN and
        LOGIN alone.
    :returns: A context manager that yields the running server.
    :raises DovecotError: When Dovecot fails to start or to stop.
    """
    imap_port, pop3_port = pick_free_ports(2)
    lmtp = LMTP_BINARY.exists()
    config_path = write_config(
        root, imap_port, pop3_port, lmtp=lmtp, introspection_url=introspection_url
    )
    prepare_homes(root)
    log_path = root / "dovecot.log"
    pid_path = root / "run" / "master.pid"
    lmtp_socket = root / "run" / "lmtp-postfix" if lmtp else None

    try:
        start_dovecot(binary, config_path, root / "dovecot.out")
        wait_until_listening(pid_path, [imap_port, pop3_port], log_path)
        yield DovecotServer(
            host=HOST,
            imap_port=imap_port,
            pop3_port=pop3_port,
            users=dict(USERS),
            messages=MESSAGES,
            log_path=log_path,
            auth_socket=root / "run" / "auth-postfix",
            lmtp_socket=lmtp_socket,
        )
    finally:
        stop_dovecot(pid_path)

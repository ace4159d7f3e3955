"""Run a throwaway Postfix submission server on 127.0.0.1 for tests.

Postfix runs from its own configuration directory, with its queue, data
directory and log in one folder, and listens only on two free high ports of
127.0.0.1, never on port 25. It authenticates SMTP clients through the Dovecot
fixture's auth socket and delivers mail for :data:`DOMAIN` over LMTP into the
Dovecot users' INBOX. Every other destination goes to Postfix's ``error``
transport, and master.cf defines no ``smtp`` client, so no message can leave
the machine. Written against Postfix 3.7 (Debian 12).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .dovecot import HOST, USERS, accepts_connections, is_running, pick_free_ports

# Mail for this domain goes to the Dovecot user named by the local part.
DOMAIN = "example.org"

STARTUP_TIMEOUT = 15.0
# ``postfix stop`` itself waits up to 5 s before it sends SIGKILL.
SHUTDOWN_TIMEOUT = 10.0

MAIN_CF_TEMPLATE = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop

# No syslog daemon runs on test machines, so postlogd writes this file.
maillog_file = {root}/postfix.log
maillog_file_prefixes = {root}

myhostname = postfix.example
mydomain = postfix.example
myorigin = $myhostname
mydestination =
inet_interfaces = {host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8

# Keep every message on this machine: no relay host and no DNS. Every
# destination outside the test domain resolves to the error transport, so
# smtpd rejects such recipients at RCPT TO.
relayhost =
relay_domains =
default_transport = error
relay_transport = error
local_transport = error
disable_dns_lookups = yes
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
alias_maps =
alias_database =
local_recipient_maps =
biff = no

virtual_mailbox_domains = {domain}
virtual_mailbox_maps = inline:{{ {mailboxes} }}
virtual_transport = lmtp:unix:{lmtp_socket}

smtpd_banner = $myhostname ESMTP
smtpd_tls_security_level = none
smtp_tls_security_level = none
smtpd_sasl_type = dovecot
smtpd_sasl_path = {auth_socket}
smtpd_sasl_auth_enable = no
smtpd_relay_restrictions = reject
smtpd_recipient_restrictions = reject
"""

# No service runs chrooted, because the Dovecot sockets and this instance's
# files live outside the queue directory. The only inet services are the two
# smtpd listeners, and there is no smtp or relay client.
# The submission smtpd accepts XCLIENT from 127.0.0.0/8, where the proxy
# runs, so that the proxy can pass the client's address on.
MASTER_CF_TEMPLATE = """\
{host}:{submission_port} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_authorized_xclient_hosts=127.0.0.0/8
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
{host}:{trusted_port} inet n - n - - smtpd
  -o syslog_name=postfix/trusted
  -o smtpd_relay_restrictions=permit_mynetworks,reject
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
lmtp unix - - n - - lmtp
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


class PostfixError(RuntimeError):
    """Postfix failed to start or to stop."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PostfixServer:
    """A running Postfix instance in front of the Dovecot fixture.

    :ivar host: Address that both smtpd listeners are bound to.
    :ivar submission_port: Port of the smtpd that requires SASL
        authentication (PLAIN or LOGIN, checked by Dovecot) before it accepts
        recipients.
    :ivar trusted_port: Port of the smtpd that offers no AUTH and accepts
        recipients from any client in 127.0.0.0/8.
    :ivar log_path: Postfix's log file.
    """

    host: str
    submission_port: int
    trusted_port: int
    log_path: Path

    def read_log(self) -> str:
        """Read Postfix's log as written so far.

        :returns: The log text, or an empty string before the first entry.
        """
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def find_postfix() -> str | None:
    """Locate the ``postfix`` command.

    :returns: Its path, or ``None`` when Postfix is not installed.
    """
    found = shutil.which("postfix")
    if found is not None:
        return found

    # /usr/sbin is missing from PATH for many non-root shells.
    fallback = Path("/usr/sbin/postfix")
    return str(fallback) if fallback.exists() else None


def write_config(
    config_dir: Path,
    root: Path,
    ports: tuple[int, int],
    sockets: tuple[Path, Path],
) -> None:
    """Write ``main.cf`` and ``master.cf`` into ``config_dir``.

    :param config_dir: Postfix's configuration directory, created here.
    :param root: Folder that contains everything of this instance.
    :param ports: Submission port and trusted port.
    :param sockets: Dovecot's auth socket and LMTP socket.
    """
    submission_port, trusted_port = ports
    auth_socket, lmtp_socket = sockets
    mailboxes = ", ".join(f"{user}@{DOMAIN}={user}" for user in USERS)
    main_cf = MAIN_CF_TEMPLATE.format(
        root=root,
        host=HOST,
        domain=DOMAIN,
        mailboxes=mailboxes,
        lmtp_socket=lmtp_socket,
        auth_socket=auth_socket,
    )
    master_cf = MASTER_CF_TEMPLATE.format(
        host=HOST, submission_port=submission_port, trusted_port=trusted_port
    )

    config_dir.mkdir(mode=0o755)
    (config_dir / "main.cf").write_text(main_cf, encoding="utf-8")
    (config_dir / "master.cf").write_text(master_cf, encoding="utf-8")


def prepare_directories(root: Path) -> None:
    """Create the queue and data directories with the owners Postfix expects.

    Postfix wants the queue directory owned by root and the data directory
    owned by the ``postfix`` user (Debian's /etc/postfix/postfix-files).
    ``postfix start`` then creates the queue's subdirectories, owned by the
    ``postfix`` user.

    :param root: Folder that contains everything of this instance.
    """
    (root / "queue").mkdir(mode=0o755)
    data = root / "data"
    data.mkdir(mode=0o700)
    shutil.chown(data, user="postfix", group="postfix")


def run_postfix(binary: str, config_dir: Path, command: str, output: Path) -> None:
    """Run ``postfix -c config_dir command`` and wait for it to finish.

    The output goes to a file because ``postfix start`` leaves a daemon that
    keeps stdout and stderr open, so a pipe would never reach end of file.

    :param binary: Path of the ``postfix`` command.
    :param config_dir: Postfix's configuration directory.
    :param command: Subcommand such as ``start`` or ``stop``.
    :param output: File that collects the command's output.
    :raises PostfixError: When the command exits with a non-zero status.
    """
    with output.open("ab") as sink:
        completed = subprocess.run(
            [binary, "-c", str(config_dir), command],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=STARTUP_TIMEOUT,
            check=False,
        )

    if completed.returncode != 0:
        text = output.read_text(errors="replace")
        message = f"postfix {command} exited with {completed.returncode}: {text}"
        raise PostfixError(message)


def wait_until_listening(ports: Sequence[int], log: Path) -> None:
    """Wait until Postfix accepts connections on every port in ``ports``.

    :param ports: Ports that must accept connections.
    :param log: Postfix's log, quoted in the error.
    :raises PostfixError: When that takes longer than
        :data:`STARTUP_TIMEOUT` seconds.
    """
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if all(accepts_connections(port) for port in ports):
            return
        time.sleep(0.05)

    log_text = log.read_text(errors="replace") if log.exists() else "(no log)"
    message = (
        f"postfix did not listen on {HOST} ports {list(ports)} within "
        f"{STARTUP_TIMEOUT} s. Log:\n{log_text}"
    )
    raise PostfixError(message)


def read_master_pid(pid_path: Path) -> int | None:
    """Read the PID of the Postfix master process.

    :param pid_path: The ``pid/master.pid`` file in the queue directory.
    :returns: The PID, or ``None`` when the file is missing or empty.
    """
    try:
        text = pid_path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text else None


def stop_postfix(binary: str, config_dir: Path, root: Path) -> None:
    """Run ``postfix stop`` and wait until the master process has exited.

    The master stops its child processes before it exits.

    :param binary: Path of the ``postfix`` command.
    :param config_dir: Postfix's configuration directory.
    :param root: Folder that contains everything of this instance.
    :raises PostfixError: When the master is still running after
        :data:`SHUTDOWN_TIMEOUT` seconds, in which case it gets SIGKILL.
    """
    pid = read_master_pid(root / "queue" / "pid" / "master.pid")
    if pid is None or not is_running(pid):
        return
    run_postfix(binary, config_dir, "stop", root / "postfix.out")

    deadline = time.monotonic() + SHUTDOWN_TIMEOUT
    while time.monotonic() < deadline:
        if not is_running(pid):
            return
        time.sleep(0.05)

    os.kill(pid, signal.SIGKILL)
    message = f"postfix master (PID {pid}) still ran {SHUTDOWN_TIMEOUT} s after stop"
    raise PostfixError(message)


@contextmanager
def running_postfix(
    binary: str, root: Path, auth_socket: Path, lmtp_socket: Path
) -> Iterator[PostfixServer]:
    """Run Postfix from a fresh configuration in ``root`` until the block ends.

    Must run as root, like every ``postfix start``.

    :param binary: Path of the ``postfix`` command.
    :param root: Empty folder for configuration, queue and log, which the
        ``postfix`` user can enter.
    :param auth_socket: Dovecot's SASL auth socket, which the ``postfix``
        user can open.
    :param lmtp_socket: Dovecot's LMTP socket, which the ``postfix`` user can
        open.
    :returns: A context manager that yields the running server.
    :raises PostfixError: When Postfix fails to start or to stop.
    """
    ports = pick_free_ports(2)
    config_dir = root / "config"
    write_config(config_dir, root, (ports[0], ports[1]), (auth_socket, lmtp_socket))
    prepare_directories(root)
    log_path = root / "postfix.log"

    try:
        run_postfix(binary, config_dir, "start", root / "postfix.out")
        wait_until_listening(ports, log_path)
        yield PostfixServer(
            host=HOST,
            submission_port=ports[0],
            trusted_port=ports[1],
            log_path=log_path,
        )
    finally:
        stop_postfix(binary, config_dir, root)

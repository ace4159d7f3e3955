"""Run a throwaway FreeRADIUS server on 127.0.0.1 for tests.

The server gets a copy of Debian's configuration in its own folder, patched
so that it listens for authentication on one free high UDP port of
127.0.0.1 only, accepts one client (127.0.0.1), which must send a
Message-Authenticator, and checks the users of :data:`USERS` with the
``files`` and ``pap`` modules. Every other virtual server and every module
that these do not use is removed, so nothing listens on the default ports.
Written against FreeRADIUS 3.2 (Debian 12 ships 3.2.1).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"

#: Debian's configuration, which the fixture copies.
SYSTEM_CONFIG = Path("/etc/freeradius/3.0")

#: The shared secret of the client 127.0.0.1, 16 bytes as RFC 2865 advises.
SECRET = "radius-test-key1"

STARTUP_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 10.0

#: Modules that the test virtual server uses. All others are removed from
#: mods-enabled, because some (eap) need certificates that a fresh
#: install lacks.
MODULES = ("always", "attr_filter", "expr", "files", "pap")


@dataclass(frozen=True, slots=True, kw_only=True)
class RadiusUser:
    """A user of the ``files`` module.

    :ivar name: The User-Name.
    :ivar password: The cleartext password.
    :ivar reply_class: The Class attribute of the Access-Accept, or ``None``
        for none.
    """

    name: str
    password: str
    reply_class: str | None = None


USERS: tuple[RadiusUser, ...] = (
    RadiusUser(name="vpnuser", password="vpnpass", reply_class="OU=staff;"),
    RadiusUser(name="plainuser", password="plainpass"),
    RadiusUser(name="opaqueuser", password="opaquepass", reply_class="session-42"),
)

SITE_TEMPLATE = """\
server mailproxy_test {{
	listen {{
		type = auth
		ipaddr = {host}
		port = {port}
	}}
	authorize {{
		files
		pap
	}}
	authenticate {{
		Auth-Type PAP {{
			pap
		}}
	}}
	# FreeRADIUS 3.2.1 signs a reply only when it contains a
	# Message-Authenticator, so both kinds of reply get an empty one, which
	# the server computes when it encodes the reply.
	post-auth {{
		update reply {{
			&Message-Authenticator := 0x00
		}}
		Post-Auth-Type REJECT {{
			attr_filter.access_reject
			update reply {{
				&Message-Authenticator := 0x00
			}}
		}}
	}}
}}
"""

CLIENTS_TEMPLATE = """\
client mailproxy_test {{
	ipaddr = {host}
	secret = {secret}
	require_message_authenticator = yes
}}
"""


class FreeradiusError(RuntimeError):
    """FreeRADIUS failed to start or to stop."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RadiusServer:
    """A running FreeRADIUS and the users that it checks.

    :ivar host: Address of the authentication listener.
    :ivar port: Its UDP port.
    :ivar secret: The shared secret of the client 127.0.0.1.
    :ivar users: The users of the ``files`` module.
    :ivar log_path: FreeRADIUS's log file.
    """

    host: str
    port: int
    secret: str
    users: tuple[RadiusUser, ...]
    log_path: Path

    def read_log(self) -> str:
        """Read the FreeRADIUS log as written so far.

        :returns: The log text, or an empty string before the first entry.
        """
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def find_freeradius() -> str | None:
    """Locate the ``freeradius`` binary.

    :returns: Its path, or ``None`` when FreeRADIUS is not installed.
    """
    found = shutil.which("freeradius")
    if found is not None:
        return found

    # /usr/sbin is missing from PATH for many non-root shells.
    fallback = Path("/usr/sbin/freeradius")
    return str(fallback) if fallback.exists() else None


def pick_free_udp_port() -> int:
    """Ask the kernel for a free UDP port on :data:`HOST`.

    Another process may take it before FreeRADIUS binds it.

    :returns: The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def users_file(users: tuple[RadiusUser, ...]) -> str:
    """Return the ``files`` module's authorize file for ``users``.

    :param users: The users to check.
    :returns: The file text.
    """
    entries = []
    for user in users:
        entry = f'{user.name}\tCleartext-Password := "{user.password}"\n'
        if user.reply_class is not None:
            entry += f'\tClass := "{user.reply_class}"\n'
        entries.append(entry)
    return "\n".join(entries)


def patch_radiusd_conf(path: Path, raddb: Path, root: Path) -> None:
    """Point radiusd.conf at the copy and make it run as the current user.

    :param path: The copied radiusd.conf.
    :param raddb: The folder of the copy.
    :param root: Folder for the PID file and the log.
    :raises FreeradiusError: When a setting to patch is missing, which
        means a FreeRADIUS version that this module does not know.
    """
    text = path.read_text(encoding="utf-8")
    replacements = {
        r"^raddbdir = .*$": f"raddbdir = {raddb}",
        r"^logdir = .*$": f"logdir = {root}",
        r"^run_dir = .*$": f"run_dir = {root}",
        r"^proxy_requests\s*=.*$": "proxy_requests = no",
        # Without a switch to the freerad account, the server can read the
        # copy and write its log in a folder that only root may enter.
        r"^\s*user = freerad$": "",
        r"^\s*group = freerad$": "",
        # Log every accept and reject, for tests that read the log.
        r"^\s*auth = no$": "\tauth = yes",
    }
    for pattern, replacement in replacements.items():
        text, count = re.subn(pattern, replacement, text, count=1, flags=re.M)
        if count != 1:
            raise FreeradiusError(f"{path}: no line matches {pattern!r}")
    path.write_text(text, encoding="utf-8")


def write_config(root: Path, port: int) -> Path:
    """Copy and patch Debian's FreeRADIUS configuration into ``root``.

    :param root: Folder that contains everything of this instance.
    :param port: UDP port for the authentication listener.
    :returns: The configuration folder, for ``freeradius -d``.
    """
    raddb = root / "raddb"
    shutil.copytree(SYSTEM_CONFIG, raddb, symlinks=True)
    patch_radiusd_conf(raddb / "radiusd.conf", raddb, root)

    # The home servers of proxy.conf are unused without proxying.
    (raddb / "proxy.conf").write_text("", encoding="utf-8")
    for link in (raddb / "sites-enabled").iterdir():
        link.unlink()
    for link in (raddb / "mods-enabled").iterdir():
        if link.name not in MODULES:
            link.unlink()

    site = SITE_TEMPLATE.format(host=HOST, port=port)
    (raddb / "sites-enabled" / "mailproxy_test").write_text(site, encoding="utf-8")
    clients = CLIENTS_TEMPLATE.format(host=HOST, secret=SECRET)
    (raddb / "clients.conf").write_text(clients, encoding="utf-8")
    authorize = raddb / "mods-config" / "files" / "authorize"
    authorize.write_text(users_file(USERS), encoding="utf-8")
    return raddb


def check_config(binary: str, raddb: Path) -> None:
    """Run ``freeradius -C`` on the configuration.

    :param binary: Path of the ``freeradius`` binary.
    :param raddb: The configuration folder.
    :raises FreeradiusError: With the output, when the check fails.
    """
    completed = subprocess.run(
        [binary, "-XC", "-d", str(raddb)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
        check=False,
    )
    if completed.returncode != 0:
        output = (completed.stdout + completed.stderr)[-4000:]
        raise FreeradiusError(f"freeradius -XC failed:\n{output}")


def wait_until_ready(process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Wait until FreeRADIUS logs that it processes requests.

    :param process: The FreeRADIUS process.
    :param log_path: Its log file.
    :raises FreeradiusError: When it exits, or is not ready within
        :data:`STARTUP_TIMEOUT` seconds.
    """
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        if log_path.exists() and "Ready to process requests" in log_path.read_text(
            errors="replace"
        ):
            return
        time.sleep(0.05)

    log_text = log_path.read_text(errors="replace") if log_path.exists() else ""
    state = (
        f"exited with {process.returncode}"
        if process.poll() is not None
        else f"was not ready within {STARTUP_TIMEOUT} s"
    )
    raise FreeradiusError(f"freeradius {state}. Log:\n{log_text}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Send SIGTERM to ``process`` and wait until it has exited.

    :param process: A process that this module started.
    :raises FreeradiusError: When it is still running after
        :data:`SHUTDOWN_TIMEOUT` seconds, in which case it gets SIGKILL.
    """
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(SHUTDOWN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(SHUTDOWN_TIMEOUT)
        message = (
            f"freeradius (PID {process.pid}) ignored SIGTERM for {SHUTDOWN_TIMEOUT} s"
        )
        raise FreeradiusError(message) from None


@contextmanager
def running_freeradius(binary: str, root: Path) -> Iterator[RadiusServer]:
    """Run FreeRADIUS from a fresh configuration in ``root`` until the block ends.

    :param binary: Path of the ``freeradius`` binary.
    :param root: Empty folder for the configuration copy, PID file and log.
    :returns: A context manager that yields the running server.
    :raises FreeradiusError: When FreeRADIUS fails to start or to stop.
    """
    port = pick_free_udp_port()
    raddb = write_config(root, port)
    check_config(binary, raddb)
    log_path = root / "radius.log"

    # -f keeps the server in the foreground, so process.pid is the server.
    # Its own output goes to a file, because a pipe that is not read
    # would block the server once full.
    with (root / "freeradius.out").open("wb") as output:
        process = subprocess.Popen(
            [binary, "-f", "-d", str(raddb), "-l", str(log_path)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_ready(process, log_path)
        yield RadiusServer(
            host=HOST, port=port, secret=SECRET, users=USERS, log_path=log_path
        )
    finally:
        stop_process(process)

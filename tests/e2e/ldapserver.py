"""Run a throwaway OpenLDAP slapd on 127.0.0.1 for tests.

The server gets its own slapd.conf, mdb database, TLS certificate and log in
one folder, and listens on two free high ports: ``ldap://`` (with StartTLS)
and ``ldaps://``. The directory is loaded with slapadd before the start.
Written against OpenLDAP 2.5 (Debian 12 ships 2.5.13).

slapd runs in the foreground with ``-d stats``, which logs every connection
and operation to stderr. stderr goes to a file, which tests read to count
binds.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from mailproxy_core.proxy.tls import generate_self_signed

HOST = "127.0.0.1"
BASE_DN = "dc=example,dc=org"
PEOPLE_DN = f"ou=people,{BASE_DN}"
CONTRACTORS_DN = f"ou=contractors,{BASE_DN}"

#: The service account that may search the directory.
SERVICE_DN = f"cn=reader,{BASE_DN}"
SERVICE_PASSWORD = "readerpass"

#: The attribute that contains a user's group policy.
GROUP_ATTRIBUTE = "employeeType"

STARTUP_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 10.0

# Debian installs the schema files and the back-end modules here.
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")


@dataclass(frozen=True, slots=True, kw_only=True)
class LdapUser:
    """A person entry of the test directory.

    :ivar uid: the ``uid`` value, which is the login name.
    :ivar password: the cleartext password, stored as a salted SHA-1 hash.
    :ivar group: the ``employeeType`` value, or ``None`` for none.
    :ivar parent: the DN of the organizational unit that contains the entry.
    """

    uid: str
    password: str
    group: str | None = None
    parent: str = PEOPLE_DN

    @property
    def dn(self) -> str:
        """DN of the entry.

        None of the uids needs escaping in a DN (RFC 4514 section 2.4).
        """
        return f"uid={self.uid},{self.parent}"


#: ``vpn*`` and ``ops(admin)`` contain filter metacharacters: an unescaped
#: filter ``(uid=vpn*)`` would also match vpnuser. The two ``twin`` entries
#: make the user name ``twin`` ambiguous.
USERS: tuple[LdapUser, ...] = (
    LdapUser(uid="vpnuser", password="vpnpass", group="staff"),
    LdapUser(uid="otheruser", password="otherpass"),
    LdapUser(uid="vpn*", password="starpass", group="wildcard"),
    LdapUser(uid="ops(admin)", password="parenpass", group="operators"),
    LdapUser(uid="twin", password="twinpass"),
    LdapUser(uid="twin", password="twinpass", parent=CONTRACTORS_DN),
)

CONFIG_TEMPLATE = """\
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema

pidfile {root}/slapd.pid
argsfile {root}/slapd.args
modulepath {modules}
moduleload back_mdb

TLSCertificateFile {root}/server.pem
TLSCertificateKeyFile {root}/server.key

database mdb
maxsize 16777216
suffix "{base}"
directory {root}/db

# Anonymous clients and the service account may read everything except
# password hashes, which only serve to check a bind.
access to attrs=userPassword
    by anonymous auth
    by * none
access to *
    by * read
"""


class SlapdError(RuntimeError):
    """slapd failed to start or to stop."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LdapServer:
    """A running slapd and the directory it serves.

    :ivar host: Address that both listeners are bound to.
    :ivar port: Port of the ``ldap://`` listener, which offers StartTLS.
    :ivar ldaps_port: Port of the ``ldaps://`` listener.
    :ivar ca_file: PEM certificate of the server, for clients to trust.
    :ivar users: The person entries.
    :ivar log_path: slapd's stderr, with one ``stats`` line per operation.
    """

    host: str
    port: int
    ldaps_port: int
    ca_file: Path
    users: tuple[LdapUser, ...]
    log_path: Path

    @property
    def url(self) -> str:
        """URL of the plain-text listener."""
        return f"ldap://{self.host}:{self.port}"

    @property
    def ldaps_url(self) -> str:
        """URL of the TLS listener."""
        return f"ldaps://{self.host}:{self.ldaps_port}"

    def read_log(self) -> str:
        """Read slapd's log as written so far.

        :returns: The log text, or an empty string before the first entry.
        """
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def bind_lines(self) -> list[str]:
        """Return the log lines of every bind request so far.

        :returns: Lines such as ``conn=1001 op=0 BIND dn="..." method=128``.
        """
        return [line for line in self.read_log().splitlines() if " BIND dn=" in line]


def find_slapd() -> str | None:
    """Locate the ``slapd`` binary.

    :returns: Its path, or ``None`` when slapd is not installed.
    """
    return _find_binary("slapd")


def find_slapadd() -> str | None:
    """Locate the ``slapadd`` tool, which loads LDIF into a stopped database.

    :returns: Its path, or ``None`` when it is not installed.
    """
    return _find_binary("slapadd")


def _find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found is not None:
        return found

    # /usr/sbin is missing from PATH for many non-root shells.
    fallback = Path("/usr/sbin") / name
    return str(fallback) if fallback.exists() else None


def pick_free_ports(count: int) -> list[int]:
    """Ask the kernel for distinct free TCP ports on :data:`HOST`.

    All sockets stay bound until every port is known, so the ports differ.
    Another process may still take one before slapd binds it.

    :param count: Number of ports to return.
    :returns: The port numbers.
    """
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


def ssha_hash(password: str) -> str:
    """Hash ``password`` in the ``{SSHA}`` scheme that slapd checks.

    :param password: The cleartext password.
    :returns: ``{SSHA}`` and the base64 of SHA-1(password + salt) + salt.
    """
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def directory_ldif(users: Sequence[LdapUser]) -> str:
    """Return the LDIF of the whole test directory.

    :param users: The person entries, below organizational units that the
        LDIF creates.
    :returns: LDIF text for slapadd.
    """
    records = [
        f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\n"
        "dc: example\no: Example\n",
        f"dn: {PEOPLE_DN}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: {CONTRACTORS_DN}\nobjectClass: organizationalUnit\nou: contractors\n",
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\n"
        "objectClass: simpleSecurityObject\ncn: reader\n"
        f"userPassword: {ssha_hash(SERVICE_PASSWORD)}\n",
    ]
    records += [_user_ldif(user) for user in users]
    return "\n".join(records)


def _user_ldif(user: LdapUser) -> str:
    lines = [
        f"dn: {user.dn}",
        "objectClass: inetOrgPerson",
        f"uid: {user.uid}",
        f"cn: {user.uid}",
        "sn: Test",
        f"userPassword: {ssha_hash(user.password)}",
    ]
    if user.group is not None:
        lines.append(f"{GROUP_ATTRIBUTE}: {user.group}")
    return "\n".join(lines) + "\n"


def write_files(root: Path) -> Path:
    """Write slapd.conf, the directory LDIF and the TLS files into ``root``.

    :param root: Folder that contains everything of this instance.
    :returns: Path of slapd.conf.
    """
    pair = generate_self_signed("slapd test", hosts=(HOST,))
    (root / "server.pem").write_bytes(pair.certificate)
    (root / "server.key").write_bytes(pair.private_key)
    (root / "server.key").chmod(0o600)
    (root / "db").mkdir(mode=0o700)
    (root / "directory.ldif").write_text(directory_ldif(USERS), encoding="utf-8")

    config = CONFIG_TEMPLATE.format(
        root=root, schema=SCHEMA_DIR, modules=MODULE_DIR, base=BASE_DN
    )
    config_path = root / "slapd.conf"
    config_path.write_text(config, encoding="utf-8")
    return config_path


def load_directory(slapadd: str, config_path: Path, ldif_path: Path) -> None:
    """Load ``ldif_path`` into the database of ``config_path`` with slapadd.

    :param slapadd: Path of the ``slapadd`` tool.
    :param config_path: slapd.conf of the stopped server.
    :param ldif_path: The entries to add.
    :raises SlapdError: When slapadd fails.
    """
    completed = subprocess.run(
        [slapadd, "-f", str(config_path), "-l", str(ldif_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
        check=False,
    )
    if completed.returncode != 0:
        output = completed.stdout + completed.stderr
        raise SlapdError(f"slapadd exited with {completed.returncode}: {output}")


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


def wait_until_listening(
    process: subprocess.Popen[bytes], ports: Sequence[int], log_path: Path
) -> None:
    """Wait until slapd accepts connections on every port.

    :param process: The slapd process.
    :param ports: Ports that must accept connections.
    :param log_path: slapd's log, quoted in the error.
    :raises SlapdError: When slapd exits, or does not listen within
        :data:`STARTUP_TIMEOUT` seconds.
    """
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if all(accepts_connections(port) for port in ports):
            return
        time.sleep(0.05)

    log_text = log_path.read_text(errors="replace") if log_path.exists() else ""
    state = (
        f"exited with {process.returncode}"
        if process.poll() is not None
        else (
            f"did not listen on {HOST} ports {list(ports)} within {STARTUP_TIMEOUT} s"
        )
    )
    raise SlapdError(f"slapd {state}. Log:\n{log_text}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Send SIGTERM to ``process`` and wait until it has exited.

    :param process: A process that this module started.
    :raises SlapdError: When it is still running after
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
        message = f"slapd (PID {process.pid}) ignored SIGTERM for {SHUTDOWN_TIMEOUT} s"
        raise SlapdError(message) from None


@contextmanager
def running_slapd(slapd: str, slapadd: str, root: Path) -> Iterator[LdapServer]:
    """Run slapd from a fresh configuration in ``root`` until the block ends.

    :param slapd: Path of the ``slapd`` binary.
    :param slapadd: Path of the ``slapadd`` tool.
    :param root: Empty folder for configuration, database, TLS files and log.
    :returns: A context manager that yields the running server.
    :raises SlapdError: When slapd fails to start or to stop.
    """
    port, ldaps_port = pick_free_ports(2)
    config_path = write_files(root)
    load_directory(slapadd, config_path, root / "directory.ldif")
    log_path = root / "slapd.log"
    urls = f"ldap://{HOST}:{port}/ ldaps://{HOST}:{ldaps_port}/"

    # -d keeps slapd in the foreground, so process.pid is slapd itself.
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [slapd, "-d", "stats", "-h", urls, "-f", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_listening(process, [port, ldaps_port], log_path)
        yield LdapServer(
            host=HOST,
            port=port,
            ldaps_port=ldaps_port,
            ca_file=root / "server.pem",
            users=USERS,
            log_path=log_path,
        )
    finally:
        stop_process(process)

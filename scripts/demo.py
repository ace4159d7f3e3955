"""Run a complete demonstration on this machine and wait for Ctrl-C.

It starts a throwaway Dovecot on 127.0.0.1 with the test mailbox
``mailuser`` / ``mailpass`` (two messages in the INBOX), then the proxy
in front of it: IMAP4S on 127.0.0.1:9993 and POP3S on 127.0.0.1:9995,
with the VPN user ``vpnuser`` / ``vpnpass`` in a ``local`` AAA group.
Everything lives in one temporary folder that is removed at the end.
Needs root, because Dovecot switches its mail processes to another uid.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

from tests.e2e.dovecot import find_dovecot, running_dovecot  # noqa: E402

from mailproxy_core.proxy.users import UsersFile, hash_password  # noqa: E402

CONFIG = """\
drain_timeout = 5

[aaa.LOCAL]
type = "local"
users_file = "users.db"

[imap4s]
listen = "127.0.0.1:9993"
authentication = ["aaa", "mailhost"]
authentication_server_group = "LOCAL"
default_server = "mail"

[imap4s.servers.mail]
host = "127.0.0.1"
port = {imap_port}
tls = "none"

[pop3s]
listen = "127.0.0.1:9995"
authentication = ["aaa", "mailhost"]
authentication_server_group = "LOCAL"
default_server = "mail"

[pop3s.servers.mail]
host = "127.0.0.1"
port = {pop3_port}
tls = "none"
"""

INSTRUCTIONS = """
The proxy is running. Try, from another terminal:

  curl -k 'imaps://vpnuser%3Amailuser:vpnpass%3Amailpass@127.0.0.1:9993/INBOX;UID=1'
  curl -k 'pop3s://vpnuser%3Amailuser:vpnpass%3Amailpass@127.0.0.1:9995/1'

or any mail client with user name vpnuser:mailuser and password
vpnpass:mailpass (accept the self-signed certificate). Ctrl-C or SIGTERM
stops.
"""


def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into the same clean stop as Ctrl-C."""
    raise KeyboardInterrupt


def wait_until_listening(port: int, timeout: float = 15.0) -> bool:
    """Return whether 127.0.0.1:``port`` accepts a connection in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.2)
        else:
            return True
    return False


def main() -> int:
    """Start Dovecot and the proxy, and stop both on Ctrl-C or SIGTERM."""
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    binary = find_dovecot()
    if binary is None:
        print("dovecot is not installed; run scripts/demo, which installs it")
        return 1
    # Dovecot's processes drop root, so they need a folder they can enter.
    root = Path(tempfile.mkdtemp(prefix="mailproxy-demo-"))
    root.chmod(0o711)
    try:
        return run_demo(binary, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_demo(binary: str, root: Path) -> int:
    """Run Dovecot from ``root`` and the proxy in front of it."""
    mail_root = root / "dovecot"
    mail_root.mkdir()
    with running_dovecot(binary, mail_root) as dovecot:
        config = root / "proxy.toml"
        ports = {"imap_port": dovecot.imap_port, "pop3_port": dovecot.pop3_port}
        config.write_text(CONFIG.format(**ports), encoding="utf-8")
        UsersFile(root / "users.db").add(hash_password("vpnuser", "vpnpass"))
        command = [sys.executable, "-m", "mailproxy_core.proxy.cli", "serve"]
        proxy = subprocess.Popen([*command, "--config", str(config)])
        try:
            if wait_until_listening(9993):
                print(INSTRUCTIONS, flush=True)
            return proxy.wait()
        except KeyboardInterrupt:
            proxy.send_signal(signal.SIGTERM)
            return proxy.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())

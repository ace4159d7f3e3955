"""Operator mistakes and hostile user names that the proxy must handle.

The tests that run the proxy use the ``dovecot`` and ``start_proxy``
fixtures. The tests of the ``mailproxy`` command run it as a separate
process on configuration files in a temporary folder, because the
failures show up in its exit status and its standard error.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .proxyfixtures import StartProxy

pytestmark = pytest.mark.e2e

#: Seconds that one run of the ``mailproxy`` command may take.
COMMAND_TIMEOUT = 30.0

#: Seconds to wait for the proxy to finish logging a closed connection.
LOG_TIMEOUT = 5.0

#: Seconds between two looks at the captured log.
POLL_INTERVAL = 0.02

#: The C0 control characters, DEL and the C1 control characters. A terminal
#: acts on ESC sequences, and log readers split lines at some C1 characters.
CONTROL_CHARACTERS = frozenset(
    [chr(code) for code in range(0x20)]
    + [chr(0x7F)]
    + [chr(code) for code in range(0x80, 0xA0)]
)

VALID_USERS_LINE = (
    "vpnuser:scrypt:16384:8:1:loUk4YxYn7DJ/GdY2dxbvw==:"
    "goWisyoK46Hw4Ed1Z3QPR56QS6YI7iPbSDnH9f7ZzfY="
)

LOCAL_GROUP = """\
[aaa.LOCAL]
type = "local"
users_file = "users.db"
"""

IMAP4S_WITHOUT_LISTEN = (
    LOCAL_GROUP
    + """
[imap4s]
authentication = ["aaa", "mailhost"]
authentication_server_group = "LOCAL"
default_server = "mail"

[imap4s.servers.mail]
host = "127.0.0.1"
port = 1
tls = "none"
"""
)

SMTPS_WITHOUT_SERVERS = (
    LOCAL_GROUP
    + """
[smtps]
listen = "127.0.0.1:0"
authentication = ["aaa"]
authentication_server_group = "LOCAL"
"""
)


def run_command(*arguments: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``mailproxy`` with ``arguments`` and return its exit status and output."""
    command = [sys.executable, "-m", "mailproxy_core.proxy.cli", *arguments]
    return subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def write_config(folder: Path, text: str) -> Path:
    """Write ``text`` as ``proxy.toml`` and a one-user ``users.db`` into ``folder``."""
    (folder / "users.db").write_text(VALID_USERS_LINE + "\n", encoding="utf-8")
    config = folder / "proxy.toml"
    config.write_text(text, encoding="utf-8")
    return config


def control_characters_in(text: str) -> set[str]:
    """Return the control characters of ``text`` other than the line feed."""
    return {character for character in text if character in CONTROL_CHARACTERS} - {"\n"}


def wait_for_log(caplog: pytest.LogCaptureFixture, marker: str) -> None:
    """Wait until a captured log record contains ``marker``.

    :raises AssertionError: when none does within ``LOG_TIMEOUT`` seconds.
    """
    deadline = time.monotonic() + LOG_TIMEOUT
    while marker not in caplog.text:
        assert time.monotonic() < deadline, f"no log record with {marker!r}"
        time.sleep(POLL_INTERVAL)


def test_log_escapes_client_user_names(
    start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    # Any client may send these names before it has logged in, and the
    # accounting record of a failed login writes them to the log unchanged.
    caplog.set_level(logging.INFO, logger="mailproxy_core")
    proxy = start_proxy()
    user = "\x1b[2J\x1b[Hevil\x7f:mail\x1b[31mX\u0085".encode()
    with proxy.tls_client() as client:
        client.read_until(b"\r\n")
        client.send(b"a1 LOGIN {%d+}\r\n%s nope:x\r\n" % (len(user), user))
        assert client.read_until(b"\r\n").startswith(b"a1 NO")
    wait_for_log(caplog, "accounting")

    for record in caplog.records:
        message = record.getMessage()
        assert not control_characters_in(message), message


def test_check_config_rejects_missing_listen(tmp_path: Path) -> None:
    config = write_config(tmp_path, IMAP4S_WITHOUT_LISTEN)

    served = run_command("serve", "--config", str(config))
    checked = run_command("check-config", str(config))

    assert served.returncode == 2, served.stderr
    assert checked.returncode == 2, checked.stdout


def test_check_config_rejects_empty_file(tmp_path: Path) -> None:
    config = write_config(tmp_path, "")

    checked = run_command("check-config", str(config))

    assert checked.returncode == 2, checked.stdout


def test_check_config_rejects_smtps_without_servers(tmp_path: Path) -> None:
    # Every login on such a listener fails with "no server was named and none
    # is the default".
    config = write_config(tmp_path, SMTPS_WITHOUT_SERVERS)

    checked = run_command("check-config", str(config))

    assert checked.returncode == 2, checked.stdout


def test_check_config_non_utf8_file(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_bytes(b"\xff\xfe")

    checked = run_command("check-config", str(config))

    assert "Traceback" not in checked.stderr
    assert checked.returncode == 2
    assert "proxy.toml" in checked.stderr


def test_user_add_hash_name_kept(tmp_path: Path) -> None:
    # The users file reads a line that starts with "#" as a comment.
    config = write_config(tmp_path, IMAP4S_WITHOUT_LISTEN)
    group = ("--config", str(config), "--group", "LOCAL")

    added = run_command("user", "add", *group, "--password-stdin", "#x", stdin="pw\n")
    listed = run_command("user", "list", *group)

    if added.returncode == 0:
        assert "#x" in listed.stdout.split(), listed.stdout
    else:
        assert "#" in added.stderr


def test_user_add_password_stdin_not_stored(tmp_path: Path) -> None:
    config = write_config(tmp_path, IMAP4S_WITHOUT_LISTEN)
    password = "p\u00e4ss w\u00f6rd\u2713"
    group = ("--config", str(config), "--group", "LOCAL")

    added = run_command(
        "user", "add", *group, "--password-stdin", "alice", stdin=password + "\n"
    )
    listed = run_command("user", "list", *group)

    assert added.returncode == 0, added.stderr
    assert "alice" in listed.stdout.split()
    stored = (tmp_path / "users.db").read_text(encoding="utf-8")
    assert password not in stored
    assert password not in added.stdout + added.stderr

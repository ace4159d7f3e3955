"""Fixtures that run real mail servers on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from .dovecot import DovecotServer, find_dovecot, running_dovecot
from .postfix import PostfixServer, find_postfix, running_postfix

INSTALL_HINT = "run scripts/run-tests, which installs dovecot-imapd"


def unavailable(reason: str) -> NoReturn:
    """Fail the test in CI, where a missing server is a broken setup, else skip.

    :param reason: What is missing and how to get it.
    :raises pytest.fail.Exception: When the environment sets ``CI=true``.
    :raises pytest.skip.Exception: Otherwise.
    """
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    """Run one Dovecot IMAP and POP3 server for the whole test session.

    :param tmp_path_factory: Provides the folder that keeps Dovecot's log
        after the run.
    :returns: A generator that yields the running server.
    """
    binary = find_dovecot()
    if binary is None:
        unavailable(f"dovecot is not installed; {INSTALL_HINT}")
    if os.geteuid() != 0:
        unavailable(
            "the dovecot fixture needs root, because Dovecot switches its mail "
            "processes to another uid; run the tests as root"
        )

    # pytest's own temporary folders are private to root (mode 0700), but
    # Dovecot's auth and mail processes drop root before they read the
    # password file and the Maildirs, so they need a folder they can enter.
    root = Path(tempfile.mkdtemp(prefix="mailproxy-dovecot-"))
    root.chmod(0o711)
    try:
        with running_dovecot(binary, root) as server:
            yield server
    finally:
        keep_log(root / "dovecot.log", tmp_path_factory.mktemp("dovecot"))
        shutil.rmtree(root)


def keep_log(log_path: Path, destination: Path) -> None:
    """Copy a server's log into ``destination``, which outlives the run.

    :param log_path: The log file, which may not exist if the server never
        started.
    :param destination: Folder to copy it into.
    """
    if log_path.exists():
        shutil.copy(log_path, destination / log_path.name)


POSTFIX_INSTALL_HINT = "run scripts/run-tests, which installs postfix and dovecot-lmtpd"


@pytest.fixture(scope="session")
def postfix(
    dovecot: DovecotServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PostfixServer]:
    """Run one Postfix submission server for the whole test session.

    It authenticates clients and delivers mail through the ``dovecot`` fixture.

    :param dovecot: The Dovecot server behind Postfix.
    :param tmp_path_factory: Provides the folder that keeps Postfix's log
        after the run.
    :returns: A generator that yields the running server.
    """
    binary = find_postfix()
    if binary is None:
        unavailable(f"postfix is not installed; {POSTFIX_INSTALL_HINT}")
    if dovecot.lmtp_socket is None:
        unavailable(f"dovecot-lmtpd is not installed; {POSTFIX_INSTALL_HINT}")

    # Postfix's daemons run as the postfix user and read main.cf below here.
    root = Path(tempfile.mkdtemp(prefix="mailproxy-postfix-"))
    root.chmod(0o755)
    try:
        with running_postfix(
            binary, root, dovecot.auth_socket, dovecot.lmtp_socket
        ) as server:
            yield server
    finally:
        keep_log(root / "postfix.log", tmp_path_factory.mktemp("postfix"))
        shutil.rmtree(root)


# Fixtures that run the reference proxy in front of these servers.
from .proxyfixtures import imap_proxy, start_proxy  # noqa: E402, F401

# isort: split
# Fixtures that run an LDAP server and a RADIUS server.
from .aaafixtures import freeradius, slapd  # noqa: E402, F401

# isort: split
# A listener that counts connections, for upstreams that must stay unused.
from .tripwire import tripwire  # noqa: E402, F401

# isort: split
# A token introspection endpoint and mail servers that accept bearer tokens.
from .oauthfixtures import dovecot_oauth, oauth_server, postfix_oauth  # noqa: E402, F401

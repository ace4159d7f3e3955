"""Session fixtures that run an LDAP server and a RADIUS server on 127.0.0.1.

``slapd`` and ``freeradius`` each start one server for the whole session
and copy its log into pytest's temporary folder when the session ends.
When a server is not installed, they fail the test in CI (``CI=true``),
where that means a broken setup, and skip it elsewhere.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import unavailable
from .ldapserver import LdapServer, find_slapadd, find_slapd, running_slapd
from .radiusserver import RadiusServer, find_freeradius, running_freeradius

LDAP_HINT = "run scripts/run-tests, which installs slapd and ldap-utils"
RADIUS_HINT = "run scripts/run-tests, which installs freeradius"


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LdapServer]:
    """Run one OpenLDAP slapd for the whole test session.

    :param tmp_path_factory: Provides the folder that keeps slapd's log
        after the run.
    :returns: A generator that yields the running server.
    """
    binary = find_slapd()
    slapadd = find_slapadd()
    if binary is None or slapadd is None:
        unavailable(f"slapd is not installed; {LDAP_HINT}")
    if os.geteuid() != 0:
        unavailable("the slapd fixture needs root, which it runs slapd as")

    root = Path(tempfile.mkdtemp(prefix="mailproxy-slapd-"))
    try:
        with running_slapd(binary, slapadd, root) as server:
            yield server
    finally:
        keep_file(root / "slapd.log", tmp_path_factory.mktemp("slapd"))
        shutil.rmtree(root)


@pytest.fixture(scope="session")
def freeradius(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadiusServer]:
    """Run one FreeRADIUS server for the whole test session.

    :param tmp_path_factory: Provides the folder that keeps the FreeRADIUS
        log after the run.
    :returns: A generator that yields the running server.
    """
    binary = find_freeradius()
    if binary is None:
        unavailable(f"freeradius is not installed; {RADIUS_HINT}")
    if os.geteuid() != 0:
        unavailable(
            "the freeradius fixture needs root, because it reads a copy of "
            "/etc/freeradius, which only root and freerad may read"
        )

    root = Path(tempfile.mkdtemp(prefix="mailproxy-freeradius-"))
    try:
        with running_freeradius(binary, root) as server:
            yield server
    finally:
        destination = tmp_path_factory.mktemp("freeradius")
        keep_file(root / "radius.log", destination)
        keep_file(root / "freeradius.out", destination)
        shutil.rmtree(root)


def keep_file(path: Path, destination: Path) -> None:
    """Copy ``path`` into ``destination``, which outlives the run.

    :param path: A log file, which may not exist if the server never
        started.
    :param destination: Folder to copy it into.
    """
    if path.exists():
        shutil.copy(path, destination / path.name)

"""Tests of the piggyback directory and the ``mailproxy piggyback`` command."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path

import pytest

from mailproxy_core.proxy import cli
from mailproxy_core.proxy.piggyback import (
    PiggybackDirectory,
    PiggybackResult,
    add_web_session,
    create_database,
    normalize_address,
)

NOW = 1_000_000


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """Return a database with the web_sessions table and no rows."""
    path = tmp_path / "web.db"
    assert create_database(path) is True
    return path


def insert(database: Path, username: str, address: str, expires_at: int) -> None:
    """Insert one row as a web portal would, without normalizing."""
    with sqlite3.connect(database) as connection:
        connection.execute(
            "INSERT INTO web_sessions VALUES (?, ?, ?)",
            (username, address, expires_at),
        )
    connection.close()


def check(
    database: Path, address: str, identity: str | None = None, timeout: float = 2.0
) -> PiggybackResult:
    """Run one check at Unix time :data:`NOW`."""
    directory = PiggybackDirectory(database, timeout=timeout, clock=lambda: NOW)
    return asyncio.run(directory.check(address, identity))


# Addresses


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("::1", "::1"),
    ],
)
def test_normalize_address(text: str, expected: str) -> None:
    assert normalize_address(text) == expected


def test_normalize_address_rejects_names() -> None:
    with pytest.raises(ValueError):
        normalize_address("localhost")


# Checks


def test_live_row_passes(database: Path) -> None:
    insert(database, "alice", "192.0.2.1", NOW + 1)
    assert check(database, "192.0.2.1") == PiggybackResult(success=True)


def test_row_expiring_now_fails(database: Path) -> None:
    insert(database, "alice", "192.0.2.1", NOW)
    result = check(database, "192.0.2.1")
    assert result.success is False
    assert result.reason == "no live web session of 192.0.2.1"


def test_row_of_other_address_fails(database: Path) -> None:
    insert(database, "alice", "192.0.2.2", NOW + 60)
    assert check(database, "192.0.2.1").success is False


def test_mapped_client_matches_ipv4_row(database: Path) -> None:
    insert(database, "alice", "192.0.2.1", NOW + 60)
    assert check(database, "::ffff:192.0.2.1").success is True


def test_ipv4_client_matches_mapped_row(database: Path) -> None:
    insert(database, "alice", "::ffff:192.0.2.1", NOW + 60)
    assert check(database, "192.0.2.1").success is True


def test_ipv6_client_matches_compressed_row(database: Path) -> None:
    insert(database, "alice", "2001:db8::1", NOW + 60)
    assert check(database, "2001:db8:0:0:0:0:0:1").success is True


def test_identity_matches_without_case(database: Path) -> None:
    insert(database, "STRASSE", "192.0.2.1", NOW + 60)
    assert check(database, "192.0.2.1", identity="straße").success is True


def test_identity_of_other_user_fails(database: Path) -> None:
    insert(database, "bob", "192.0.2.1", NOW + 60)
    result = check(database, "192.0.2.1", identity="alice")
    assert result.success is False
    assert result.reason == (
        "the live web sessions of 192.0.2.1 belong to users other than 'alice'"
    )


def test_identity_ignores_expired_own_row(database: Path) -> None:
    insert(database, "alice", "192.0.2.1", NOW - 1)
    insert(database, "bob", "192.0.2.1", NOW + 60)
    assert check(database, "192.0.2.1", identity="alice").success is False


def test_client_address_not_ip(database: Path) -> None:
    result = check(database, "unix-socket")
    assert result.success is False
    assert result.reason == "client address 'unix-socket' is no IP address"


def test_missing_file_fails_without_creating(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "missing.db"
    directory = PiggybackDirectory(path, timeout=2.0)

    async def check_twice() -> list[PiggybackResult]:
        return [await directory.check("192.0.2.1", None) for _ in range(2)]

    with caplog.at_level(logging.ERROR, logger="mailproxy_core"):
        results = asyncio.run(check_twice())
    assert [result.success for result in results] == [False, False]
    assert results[0].reason.startswith(f"cannot read piggyback database {path}: ")
    assert not path.exists()

    # The error line for the operator comes once for the same error.
    assert caplog.text.count("cannot read piggyback database") == 1


def test_missing_table_fails(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    result = check(path, "192.0.2.1")
    assert result.success is False
    assert result.reason.endswith("no such table: web_sessions")


def test_locked_database_fails_in_time(database: Path) -> None:
    insert(database, "alice", "192.0.2.1", NOW + 60)
    writer = sqlite3.connect(database, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        result = check(database, "192.0.2.1", timeout=0.2)
        elapsed = time.monotonic() - started
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert result.success is False
    assert "cannot read piggyback database" in result.reason
    assert elapsed < 2.0


def test_create_database_twice(database: Path) -> None:
    assert create_database(database) is False


def test_add_web_session_normalizes(database: Path) -> None:
    add_web_session(
        database, username="alice", client_address="::ffff:192.0.2.1", expires_at=5
    )
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT * FROM web_sessions").fetchall()
    connection.close()
    assert rows == [("alice", "192.0.2.1", 5)]


# mailproxy piggyback


CONFIG = """\
[piggyback]
database = "web.db"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """Write a configuration with only a [piggyback] table."""
    path = tmp_path / "proxy.toml"
    path.write_text(CONFIG)
    return path


def add_command(config: Path, *extra: str) -> list[str]:
    """Return the arguments of ``piggyback add`` for alice at 192.0.2.1."""
    return [
        "piggyback",
        "add",
        "--config",
        str(config),
        "--address",
        "192.0.2.1",
        "--user",
        "alice",
        *extra,
    ]


def test_cli_init_creates_table(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["piggyback", "init", "--config", str(config)]) == 0
    database = config.parent / "web.db"
    assert capsys.readouterr().err == f"created table web_sessions in {database}\n"

    assert cli.main(["piggyback", "init", "--config", str(config)]) == 0
    assert "exists" in capsys.readouterr().err


def test_cli_add_then_check(config: Path) -> None:
    assert cli.main(["piggyback", "init", "--config", str(config)]) == 0
    before = int(time.time())
    assert cli.main(add_command(config, "--ttl", "60")) == 0

    database = config.parent / "web.db"
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT * FROM web_sessions").fetchall()
    connection.close()
    assert len(rows) == 1
    username, address, expires_at = rows[0]
    assert (username, address) == ("alice", "192.0.2.1")
    assert before + 60 <= expires_at <= int(time.time()) + 60

    directory = PiggybackDirectory(database)
    result = asyncio.run(directory.check("192.0.2.1", "ALICE"))
    assert result.success is True


def test_cli_add_before_init(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(add_command(config, "--ttl", "60")) == 1
    err = capsys.readouterr().err
    assert "cannot add the web session to" in err
    assert "run 'mailproxy piggyback init' first" in err
    assert not (config.parent / "web.db").exists()


def test_cli_add_invalid_address(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = add_command(config, "--ttl", "60")
    arguments[arguments.index("192.0.2.1")] = "not-an-ip"
    assert cli.main(arguments) == 2
    assert "--address 'not-an-ip' is no IP address" in capsys.readouterr().err


@pytest.mark.parametrize("ttl", ["0", "-5", "1.5", "soon"])
def test_cli_add_invalid_ttl(
    config: Path, ttl: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(add_command(config, f"--ttl={ttl}"))
    assert caught.value.code == 2
    assert "use a whole number of seconds above 0" in capsys.readouterr().err


def test_cli_without_piggyback_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text("drain_timeout = 5\n")
    assert cli.main(["piggyback", "init", "--config", str(path)]) == 2
    assert "has no [piggyback] table" in capsys.readouterr().err

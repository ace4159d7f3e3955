"""Tests of the users file and the ``local`` AAA server group."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

import pytest

from mailproxy_core.errors import ConfigurationError
from mailproxy_core.proxy.users import (
    SCRYPT_N,
    LocalAaaGroup,
    UsersFile,
    check_name,
    hash_password,
    parse_line,
)

PASSWORD = "correct horse battery staple"


def test_add_then_verify(tmp_path: Path) -> None:
    users = UsersFile(tmp_path / "users.db")
    assert users.add(hash_password("alice", PASSWORD)) is False

    record = users.load()["alice"]
    assert record.matches(PASSWORD)
    assert not record.matches(PASSWORD + "x")
    assert record.n == SCRYPT_N


def test_file_never_contains_password(tmp_path: Path) -> None:
    path = tmp_path / "users.db"
    UsersFile(path).add(hash_password("alice", PASSWORD))
    text = path.read_text()
    assert PASSWORD not in text
    assert "alice:scrypt:16384:8:1:" in text


def test_file_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "users.db"
    UsersFile(path).add(hash_password("alice", PASSWORD))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rewrite_leaves_no_temporary_file(tmp_path: Path) -> None:
    users = UsersFile(tmp_path / "users.db")
    users.add(hash_password("alice", PASSWORD))
    users.add(hash_password("bob", PASSWORD))
    users.remove("alice")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.db", "users.db.lock"]


def test_add_existing_replaces_password(tmp_path: Path) -> None:
    users = UsersFile(tmp_path / "users.db")
    users.add(hash_password("alice", "old"))
    assert users.add(hash_password("alice", "new", "staff")) is True

    record = users.load()["alice"]
    assert record.matches("new")
    assert not record.matches("old")
    assert record.policy == "staff"


def test_remove(tmp_path: Path) -> None:
    users = UsersFile(tmp_path / "users.db")
    users.add(hash_password("alice", PASSWORD))
    users.add(hash_password("bob", PASSWORD))
    assert users.remove("alice") is True
    assert users.remove("alice") is False
    assert list(users.load()) == ["bob"]


def test_missing_file_has_no_users(tmp_path: Path) -> None:
    assert UsersFile(tmp_path / "users.db").load() == {}


def test_salts_differ(tmp_path: Path) -> None:
    first = hash_password("alice", PASSWORD)
    second = hash_password("alice", PASSWORD)
    assert first.salt != second.salt
    assert first.password_hash != second.password_hash


def test_comments_and_blank_lines_ignored(tmp_path: Path) -> None:
    line = hash_password("alice", PASSWORD).to_line()
    path = tmp_path / "users.db"
    path.write_text(f"# comment\n\n{line}\n")
    assert list(UsersFile(path).load()) == ["alice"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("alice", "expected NAME:scrypt:N:R:P:SALT:HASH"),
        ("alice:md5:1:1:1:AA==:AA==", "expected NAME:scrypt"),
        ("alice:scrypt:x:8:1:AA==:AA==", "N, R and P must be decimal integers"),
        ("alice:scrypt:1000:8:1:AA==:AA==", "N must be a power of two"),
        ("alice:scrypt:16384:99:1:AA==:AA==", "scrypt parameters out of range"),
        ("alice:scrypt:16384:8:1:!!:AA==", "invalid base64"),
    ],
)
def test_malformed_line_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "users.db"
    path.write_text(f"# header\n{line}\n")
    with pytest.raises(ConfigurationError, match=message) as caught:
        UsersFile(path).load()
    assert f"{path}:2:" in str(caught.value)


def test_duplicate_user_named(tmp_path: Path) -> None:
    line = hash_password("alice", PASSWORD).to_line()
    path = tmp_path / "users.db"
    path.write_text(f"{line}\n{line}\n")
    with pytest.raises(ConfigurationError, match="'alice' is listed twice"):
        UsersFile(path).load()


@pytest.mark.parametrize("name", ["", "a:b", "a b", "a\tb", "a\x00b", "x" * 257])
def test_check_name_rejects(name: str) -> None:
    with pytest.raises(ValueError):
        check_name(name, "user name")


def test_round_trip_of_line() -> None:
    record = hash_password("alice", PASSWORD, "staff")
    assert parse_line(record.to_line(), "test") == record


def authenticate(group: LocalAaaGroup, user: str, password: str) -> tuple[bool, str]:
    result = asyncio.run(group.authenticate(user, password))
    return result.success, result.reason


def test_local_group_results(tmp_path: Path) -> None:
    path = tmp_path / "users.db"
    UsersFile(path).add(hash_password("alice", PASSWORD, "staff"))
    group = LocalAaaGroup("LOCAL", path)

    result = asyncio.run(group.authenticate("alice", PASSWORD))
    assert result.success
    assert result.group == "staff"
    assert authenticate(group, "alice", "wrong") == (False, "wrong password")
    assert authenticate(group, "mallory", PASSWORD) == (False, "unknown user")


def test_local_group_rereads_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "users.db"
    users = UsersFile(path)
    users.add(hash_password("alice", PASSWORD))
    group = LocalAaaGroup("LOCAL", path)
    assert authenticate(group, "bob", PASSWORD)[0] is False

    users.add(hash_password("bob", PASSWORD))
    assert authenticate(group, "bob", PASSWORD)[0] is True
    users.remove("alice")
    assert authenticate(group, "alice", PASSWORD) == (False, "unknown user")


def test_local_group_keeps_users_after_bad_edit(tmp_path: Path) -> None:
    path = tmp_path / "users.db"
    UsersFile(path).add(hash_password("alice", PASSWORD))
    group = LocalAaaGroup("LOCAL", path)
    path.write_text("garbage\n")
    assert authenticate(group, "alice", PASSWORD)[0] is True


def test_local_group_rejects_bad_file_at_start(tmp_path: Path) -> None:
    path = tmp_path / "users.db"
    path.write_text("garbage\n")
    with pytest.raises(ConfigurationError):
        LocalAaaGroup("LOCAL", path)


def test_unknown_user_costs_a_hash(tmp_path: Path) -> None:
    path = tmp_path / "users.db"
    UsersFile(path).add(hash_password("alice", PASSWORD))
    group = LocalAaaGroup("LOCAL", path)

    def timed(user: str) -> float:
        started = time.perf_counter()
        authenticate(group, user, "wrong")
        return time.perf_counter() - started

    known = min(timed("alice") for _ in range(3))
    unknown = min(timed("mallory") for _ in range(3))
    # Without the dummy hash an unknown name would take microseconds, not
    # a large share of one scrypt run.
    assert unknown > known / 3


def test_verification_runs_off_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "users.db"
    UsersFile(path).add(hash_password("alice", PASSWORD))
    group = LocalAaaGroup("LOCAL", path)

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        await asyncio.gather(*(group.authenticate("alice", PASSWORD) for _ in range(4)))
        task.cancel()
        return ticks

    # Four scrypt runs take about 100 ms or more; the loop must keep ticking.
    assert asyncio.run(main()) >= 5


def test_file_written_by_other_process_mode_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "users.db"
    path.write_text("")
    os.chmod(path, 0o644)
    UsersFile(path).add(hash_password("alice", PASSWORD))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

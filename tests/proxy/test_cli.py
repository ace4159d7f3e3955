"""Tests of the ``mailproxy`` command through :func:`main`."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from mailproxy_core.proxy import cli
from mailproxy_core.proxy.tls import generate_self_signed
from mailproxy_core.proxy.users import UsersFile

CONFIG = """\
[aaa.LOCAL]
type = "local"
users_file = "users.db"

[imap4s]
listen = ["127.0.0.1:9993", "[::1]:9993"]
authentication = ["aaa", "mailhost"]
authentication_server_group = "LOCAL"
default_server = "mail"
{extra}

[imap4s.servers.mail]
host = "127.0.0.1"
port = 143
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """Write a valid configuration and return its path."""
    path = tmp_path / "proxy.toml"
    path.write_text(CONFIG.format(extra=""))
    return path


def add_user(
    config: Path, monkeypatch: pytest.MonkeyPatch, name: str, password: str
) -> int:
    """Run ``user add --password-stdin`` with ``password`` on standard input."""
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    arguments = ["user", "add", "--config", str(config), "--group", "LOCAL"]
    return cli.main([*arguments, name, "--password-stdin"])


def test_check_config_ok(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"configuration OK: {config}\n")
    assert "imap4s: listens on 127.0.0.1:9993, [::1]:9993; implicit TLS" in out
    assert "throwaway self-signed certificate" in out
    assert "authentication aaa, mailhost (AAA group LOCAL)" in out
    assert "servers mail=127.0.0.1:143/none default" in out
    assert f"aaa.LOCAL: local, 0 users in {config.parent / 'users.db'}" in out


def test_check_config_error_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(
        CONFIG.format(extra="").replace('"aaa", "mailhost"', '"aaa", "foo"')
    )
    assert cli.main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        "mailproxy: imap4s.authentication[1]: 'foo' is invalid; "
        "use one of: aaa, certificate, mailhost, piggyback\n"
    )


def test_check_config_loads_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "proxy.pem").write_bytes(generate_self_signed().certificate)
    (tmp_path / "proxy.key").write_bytes(generate_self_signed().private_key)
    path = tmp_path / "proxy.toml"
    extra = 'certificate = "proxy.pem"\nprivate_key = "proxy.key"'
    path.write_text(CONFIG.format(extra=extra))
    assert cli.main(["check-config", str(path)]) == 2
    assert "imap4s.certificate: cannot load the certificate and key" in (
        capsys.readouterr().err
    )


def test_check_config_reports_bad_users_file(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (config.parent / "users.db").write_text("broken\n")
    assert cli.main(["check-config", str(config)]) == 2
    assert "users.db:1: expected NAME:scrypt" in capsys.readouterr().err


def test_check_config_example(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).parents[2] / "examples" / "proxy.toml"
    assert cli.main(["check-config", str(example)]) == 0
    assert "imap4s: listens on 127.0.0.1:9993" in capsys.readouterr().out


def test_user_add_list_remove(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add_user(config, monkeypatch, "alice", "s3cret pass") == 0
    assert add_user(config, monkeypatch, "bob", "other") == 0
    users_file = config.parent / "users.db"
    assert "s3cret pass" not in users_file.read_text()
    assert UsersFile(users_file).load()["alice"].matches("s3cret pass")
    capsys.readouterr()

    group = ["--config", str(config), "--group", "LOCAL"]
    assert cli.main(["user", "list", *group]) == 0
    assert capsys.readouterr().out == "alice\nbob\n"

    assert cli.main(["user", "remove", *group, "alice"]) == 0
    assert cli.main(["user", "list", *group]) == 0
    assert capsys.readouterr().out == "bob\n"


def test_user_add_with_policy(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with config.open("a") as file:
        file.write("\n[group_policy.staff]\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    group = ["--config", str(config), "--group", "LOCAL"]
    command = ["user", "add", *group, "alice", "--password-stdin", "--policy", "staff"]
    assert cli.main(command) == 0
    capsys.readouterr()
    assert cli.main(["user", "list", *group]) == 0
    assert capsys.readouterr().out == "alice (policy staff)\n"


def test_user_add_unknown_policy_rejected(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    group = ["--config", str(config), "--group", "LOCAL"]
    command = ["user", "add", *group, "alice", "--password-stdin", "--policy", "staff"]
    assert cli.main(command) == 2
    assert (
        "--policy 'staff' is not a [group_policy.NAME] table" in capsys.readouterr().err
    )


def test_user_add_separator_in_name_or_password_rejected(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config.write_text('[delimiters]\nname_separator = "|"\n' + config.read_text())
    assert add_user(config, monkeypatch, "vpn|user", "pw") == 2
    assert "contains the name separator '|'" in capsys.readouterr().err
    assert add_user(config, monkeypatch, "alice", "pass|word") == 1
    assert "the password contains the name separator '|'" in capsys.readouterr().err
    assert not (config.parent / "users.db").exists()


def test_user_add_eof_at_prompt(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_input(prompt: str) -> str:
        raise EOFError

    monkeypatch.setattr("getpass.getpass", no_input)
    group = ["--config", str(config), "--group", "LOCAL"]
    assert cli.main(["user", "add", *group, "alice"]) == 1
    assert "no password entered" in capsys.readouterr().err


def test_user_add_asks_twice(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prompts: list[str] = []

    def fake_getpass(prompt: str) -> str:
        prompts.append(prompt)
        return "typed secret"

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    group = ["--config", str(config), "--group", "LOCAL"]
    assert cli.main(["user", "add", *group, "alice"]) == 0
    assert prompts == ["Password: ", "Repeat the password: "]
    assert UsersFile(config.parent / "users.db").load()["alice"].matches("typed secret")


def test_user_add_mismatch_changes_nothing(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter(["first", "second"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    group = ["--config", str(config), "--group", "LOCAL"]
    assert cli.main(["user", "add", *group, "alice"]) == 1
    assert "the passwords differ" in capsys.readouterr().err
    assert not (config.parent / "users.db").exists()


def test_user_add_empty_password_rejected(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add_user(config, monkeypatch, "alice", "") == 1
    assert "the password is empty" in capsys.readouterr().err


def test_user_add_invalid_name(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add_user(config, monkeypatch, "a:b", "pw") == 2
    assert "user name must not contain ':'" in capsys.readouterr().err


def test_user_remove_unknown(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    group = ["--config", str(config), "--group", "LOCAL"]
    assert cli.main(["user", "remove", *group, "nobody"]) == 1
    assert "user 'nobody' not found" in capsys.readouterr().err


def test_unknown_group(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["user", "list", "--config", str(config), "--group", "X"]) == 2
    assert "--group 'X' is not an [aaa.NAME] group" in capsys.readouterr().err


def test_serve_without_listen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "proxy.toml"
    text = CONFIG.format(extra="").replace(
        'listen = ["127.0.0.1:9993", "[::1]:9993"]\n', ""
    )
    path.write_text(text)
    assert cli.main(["serve", "--config", str(path)]) == 2
    assert "no listener has a 'listen' address" in capsys.readouterr().err


def test_help_describes_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["user", "add", "--help"])
    out = capsys.readouterr().out
    assert "--password-stdin" in out
    assert "[aaa.NAME] server group" in out

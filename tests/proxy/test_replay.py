"""``mailproxy replay`` output: every event, as JSON, without secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailproxy_core.proxy import cli
from mailproxy_core.proxy.replay import format_lines

TRANSCRIPTS = Path(__file__).parent.parent / "transcripts"
PROTOCOLS = {"imap": "imap4s", "pop3": "pop3s", "smtp": "smtps"}


@pytest.mark.parametrize(
    "path",
    sorted(TRANSCRIPTS.glob("*/*.txt")),
    ids=lambda p: f"{p.parent.name}-{p.stem}",
)
def test_replay_prints_json_without_secrets(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    lines = list(format_lines(text, PROTOCOLS[path.parent.name]))
    records = [json.loads(line) for line in lines]
    assert records[0]["event"] == "SendToClient"
    for secret in ("vpnpass", "mailpass", "secret", 's"é'):
        assert not any(secret in line for line in lines), secret


def test_replay_rejects_unknown_protocol() -> None:
    with pytest.raises(ValueError, match="use one of: imap4s, pop3s, smtps"):
        list(format_lines("= start\n", "nntp"))


def test_replay_reads_protocol_line() -> None:
    lines = list(format_lines("! protocol=pop3s\n= start\n"))
    assert json.loads(lines[0])["data"] == "+OK mailproxy ready\r\n"


def test_replay_command_prints_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    transcript = tmp_path / "session.txt"
    transcript.write_text("! protocol=imap4s\n= start\nC: a1 NOOP\n")
    assert cli.main(["replay", str(transcript)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert json.loads(lines[1])["data"] == "a1 OK NOOP completed\r\n"


def test_replay_command_needs_protocol(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    transcript = tmp_path / "session.txt"
    transcript.write_text("= start\n")
    assert cli.main(["replay", str(transcript)]) == 2
    assert "no protocol given; pass --protocol" in capsys.readouterr().err

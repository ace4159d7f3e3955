"""Checks of the transcript recorder: line handling, and a real recording."""

from __future__ import annotations

import imaplib

import pytest

from ..sessionkit import (
    byte_by_byte,
    check_expectations,
    parse_transcript,
    run_steps,
    whole,
)
from ..test_transcripts import SESSIONS, make_settings
from .dovecot import DovecotServer
from .recorder import HOST, LineBuffer, Recorder, RecordingError, transcript_lines

CLIENT_TIMEOUT = 10.0


def test_transcript_lines_split_at_crlf() -> None:
    assert transcript_lines(b"a1 OK\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n") == [
        "a1 OK",
        "",
        "Grüße",
    ]


@pytest.mark.parametrize(
    "data",
    [b"no terminator", b"bare\nLF\r\n", b"bare\rCR\r\n", b"\xff\r\n", b"\x0c\r\n"],
    ids=["unterminated", "bare-lf", "bare-cr", "not-utf8", "form-feed"],
)
def test_transcript_lines_reject(data: bytes) -> None:
    with pytest.raises(RecordingError):
        transcript_lines(data)


def test_line_buffer_holds_partial_line() -> None:
    buffer = LineBuffer()

    assert buffer.push(b"a1 NO") == b""
    assert buffer.push(b"OP\r\na2 LOG") == b"a1 NOOP\r\n"
    assert buffer.pending == b"a2 LOG"
    assert buffer.push(b"OUT\r\n") == b"a2 LOGOUT\r\n"
    assert buffer.pending == b""


@pytest.mark.e2e
def test_recorded_imaplib_session_replays(dovecot: DovecotServer) -> None:
    password = f"vpnpass:{dovecot.users['mailuser']}"
    with (
        Recorder("imap", dovecot.imap_port) as recorder,
        imaplib.IMAP4(HOST, recorder.port, timeout=CLIENT_TIMEOUT) as imap,
    ):
        imap.login("vpnuser:mailuser", password)
        imap.select("INBOX")
        imap.logout()
    text = recorder.transcript(["recorded by a test"])
    steps = parse_transcript(text)

    assert text.startswith("# recorded by a test\n= start\n")
    assert "~StateChanged authenticated" in text
    assert "F: " in text
    expected = run_steps(SESSIONS["imap"](make_settings({})), steps, whole)
    check_expectations(steps, expected)
    replayed = run_steps(SESSIONS["imap"](make_settings({})), steps, byte_by_byte)
    assert replayed == expected

"""Transcripts of every protocol: expected bytes and events, any chunking."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailproxy_core.imap import ImapSession
from mailproxy_core.pop3 import PopSession
from mailproxy_core.session import Session
from mailproxy_core.settings import AuthMethod, SessionSettings, UpstreamServer
from mailproxy_core.smtp import SmtpOptions, SmtpSession

from .sessionkit import (
    byte_by_byte,
    check_expectations,
    load_transcript,
    random_splits,
    run_steps,
    transcript_options,
    whole,
)

FOLDER = Path(__file__).parent / "transcripts"
SESSIONS: dict[str, Callable[[SessionSettings], Session]] = {
    "imap": ImapSession,
    "pop3": PopSession,
    "smtp": lambda settings: SmtpSession(
        settings, options=SmtpOptions(hostname="proxy.example", size=10485760)
    ),
}
TRANSCRIPTS = sorted(FOLDER.glob("*/*.txt"))


def make_settings(options: dict[str, str]) -> SessionSettings:
    servers = {
        "mail": UpstreamServer(name="mail", host="127.0.0.1", port=10143),
        "other": UpstreamServer(name="other", host="127.0.0.1", port=10144),
    }
    methods = options.get("methods", "aaa,mailhost").split(",")
    return SessionSettings(
        servers=servers,
        default_server="mail",
        methods=frozenset(AuthMethod(m) for m in methods),
        starttls_required=options.get("starttls_required") == "true",
    )


def make_session(path: Path) -> Session:
    options = transcript_options(path.read_text(encoding="utf-8"))
    return SESSIONS[path.parent.name](make_settings(options))


def transcript_id(path: Path) -> str:
    return f"{path.parent.name}-{path.stem}"


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=transcript_id)
def test_transcript_whole(path: Path) -> None:
    steps = load_transcript(path)
    results = run_steps(make_session(path), steps, whole)
    check_expectations(steps, results)


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=transcript_id)
def test_transcript_byte_by_byte(path: Path) -> None:
    steps = load_transcript(path)
    expected = run_steps(make_session(path), steps, whole)
    assert run_steps(make_session(path), steps, byte_by_byte) == expected


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=transcript_id)
@settings(max_examples=25)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_transcript_random_splits(path: Path, seed: int) -> None:
    steps = load_transcript(path)
    expected = run_steps(make_session(path), steps, whole)
    split = random_splits(seed)
    assert run_steps(make_session(path), steps, split) == expected


@pytest.mark.parametrize("protocol", sorted(SESSIONS))
def test_transcripts_exist(protocol: str) -> None:
    assert len(list((FOLDER / protocol).glob("*.txt"))) >= 3

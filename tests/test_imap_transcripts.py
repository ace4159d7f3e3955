"""IMAP transcripts: expected bytes and events, under any chunking."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailproxy_core.imap import ImapSession
from mailproxy_core.settings import SessionSettings, UpstreamServer

from .sessionkit import (
    byte_by_byte,
    check_expectations,
    load_transcript,
    random_splits,
    run_steps,
    whole,
)

TRANSCRIPTS = sorted((Path(__file__).parent / "transcripts" / "imap").glob("*.txt"))


def make_settings() -> SessionSettings:
    servers = {
        "mail": UpstreamServer(name="mail", host="127.0.0.1", port=10143),
        "other": UpstreamServer(name="other", host="127.0.0.1", port=10144),
    }
    return SessionSettings(servers=servers, default_server="mail")


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_transcript_whole(path: Path) -> None:
    steps = load_transcript(path)
    results = run_steps(ImapSession(make_settings()), steps, whole)
    check_expectations(steps, results)


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_transcript_byte_by_byte(path: Path) -> None:
    steps = load_transcript(path)
    expected = run_steps(ImapSession(make_settings()), steps, whole)
    assert run_steps(ImapSession(make_settings()), steps, byte_by_byte) == expected


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
@settings(max_examples=25)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_transcript_random_splits(path: Path, seed: int) -> None:
    steps = load_transcript(path)
    expected = run_steps(ImapSession(make_settings()), steps, whole)
    split = random_splits(seed)
    assert run_steps(ImapSession(make_settings()), steps, split) == expected


def test_transcripts_exist() -> None:
    assert len(TRANSCRIPTS) >= 6

"""``mailproxy replay``: run a recorded session through the core.

The recording is a transcript in the format of
:mod:`mailproxy_core.transcript`. Each event that the session returns is
printed as one JSON object per line, with the transcript line that caused
it. Nothing is opened but the file: the driver's answers (``= aaa ok``,
``= connected``) come from the transcript itself.

Secrets never appear: passwords print as ``"<redacted>"``, and bytes sent
to the upstream while the login is under way (they carry the mail password)
print only as their length.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Final

from ..errors import MailProxyError
from ..events import Event, SendToUpstream, StateChanged
from ..imap import ImapSession
from ..pop3 import PopSession
from ..secrets import Secret
from ..session import Session
from ..settings import AuthMethod, SessionSettings, UpstreamServer
from ..smtp import SmtpSession
from ..states import ConnectionState
from ..transcript import Step, apply_answer, parse_transcript, transcript_options

#: The session class for each listener name that ``--protocol`` accepts.
SESSIONS: Final[Mapping[str, Callable[[SessionSettings], Session]]] = {
    "imap4s": ImapSession,
    "pop3s": PopSession,
    "smtps": SmtpSession,
}


#: The protocol of each transcript folder name.
FOLDERS: Final[Mapping[str, str]] = {
    "imap": "imap4s",
    "pop3": "pop3s",
    "smtp": "smtps",
}


def build_settings(options: Mapping[str, str]) -> SessionSettings:
    """Build session settings from a transcript's ``!`` lines.

    ``servers`` (comma-separated names, default ``mail``), ``default_server``
    (default the first server; empty for none), ``methods`` (default
    ``aaa,mailhost``) and ``starttls_required`` (``true`` or ``false``).
    """
    names = [n for n in options.get("servers", "mail").split(",") if n]
    servers = {
        name: UpstreamServer(name=name, host="127.0.0.1", port=143 + index)
        for index, name in enumerate(names)
    }
    default = options.get("default_server", names[0] if names else "")
    methods = options.get("methods", "aaa,mailhost").split(",")
    return SessionSettings(
        servers=servers,
        default_server=default or None,
        methods=frozenset(AuthMethod(m) for m in methods),
        starttls_required=options.get("starttls_required") == "true",
    )


def replay(text: str, protocol: str | None = None) -> Iterator[dict[str, object]]:
    """Run the transcript ``text`` and yield each event as a JSON-ready dict.

    :param protocol: ``imap4s``, ``pop3s`` or ``smtps``; ``None`` takes
        the transcript's ``! protocol=`` line.
    :raises ValueError: for an unknown protocol or a malformed transcript.
    """
    options = transcript_options(text)
    name = protocol or options.get("protocol", "")
    choices = ", ".join(SESSIONS)
    if not name:
        raise ValueError(
            f"no protocol given; pass --protocol ({choices}) or add a "
            "'! protocol=NAME' line"
        )
    if name not in SESSIONS:
        raise ValueError(f"protocol {name!r} is invalid; use one of: {choices}")
    session = SESSIONS[name](build_settings(options))
    for step in parse_transcript(text):
        try:
            events = _run_step(session, step)
        except MailProxyError as error:
            # A driver answer that the session does not expect here.
            raise ValueError(f"line {step.line_number}: {error}") from None
        for event in events:
            yield {"line": step.line_number, **describe(event, session.state)}


def _run_step(session: Session, step: Step) -> list[Event]:
    if step.kind == "answer":
        return apply_answer(session, step.answer)
    if step.kind == "client":
        return session.receive_client(step.data)
    return session.receive_upstream(step.data)


def protocol_from_path(path: Path) -> str | None:
    """Return the protocol that a transcript's folder name implies.

    The transcripts of this repository live in ``imap/``, ``pop3/`` and
    ``smtp/`` folders.
    """
    return FOLDERS.get(path.parent.name)


def describe(event: Event, state: ConnectionState) -> dict[str, object]:
    """Return ``event`` as a dict of JSON values, secrets redacted.

    :param state: the session's state after the call, which shows whether
        upstream bytes may carry the login.
    """
    fields = _plain(event)
    assert isinstance(fields, dict)
    if isinstance(event, SendToUpstream) and state is ConnectionState.AUTHENTICATING:
        fields["data"] = f"<redacted: {len(event.data)} bytes>"
    if isinstance(event, StateChanged):
        fields = {"old": event.old.value, "new": event.new.value}
    return {"event": type(event).__name__, **fields}


def _plain(value: object) -> object:
    if isinstance(value, Secret):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, frozenset):
        return sorted(_plain(item) for item in value)  # type: ignore[type-var]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
        }
    return value


def format_lines(text: str, protocol: str | None = None) -> Iterator[str]:
    """Yield the JSON lines that ``mailproxy replay`` prints."""
    for record in replay(text, protocol):
        yield json.dumps(record, ensure_ascii=False)

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
from typing import Final

from ..events import Event, SendToUpstream, StateChanged
from ..imap import ImapSession
from ..pop3 import PopSession
from ..secrets import Secret
from ..session import Session
from ..settings import AuthMethod, SessionSettings, UpstreamServer
from ..smtp import SmtpSession
from ..states import ConnectionState
from ..transcript import apply_answer, parse_transcript, transcript_options

#: The session class for each listener name that ``--protocol`` accepts.
SESSIONS: Final[Mapping[str, Callable[[SessionSettings], Session]]] = {
    "imap4s": ImapSession,
    "pop3s": PopSession,
    "smtps": SmtpSession,
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
        if step.kind == "answer":
            events = apply_answer(session, step.answer)
        elif step.kind == "client":
            events = session.receive_client(step.data)
        else:
            events = session.receive_upstream(step.data)
        for event in events:
            yield {"line": step.line_number, **describe(event, session.state)}


def describe(event: Event, state: ConnectionState) -> dict[str, object]:
    """Return ``event`` as a dict of JSON values, secrets redacted.

    :param state: the session's state after the call, which tells whether
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

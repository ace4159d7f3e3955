"""A text format for recorded sessions, shared by tests and ``mailproxy replay``.

A transcript has one step per line:

``C: text``
    the client sends ``text`` and CRLF
``U: text``
    the upstream sends ``text`` and CRLF
``S: text``, ``P: text``
    the proxy must send ``text`` and CRLF to the client, or the upstream
``F: text``, ``B: text``
    the proxy must relay ``text`` and CRLF to the upstream, or back to the
    client
``~Name arg``
    an event of type ``Name`` must follow; ``arg`` is the new state, the
    method, the server name or the side, where the event has one
``! key=value``
    a setting for the whole transcript, such as ``methods=aaa,mailhost``
``= answer``
    the driver answers: ``start``, ``aaa ok [group]``, ``aaa fail``,
    ``piggyback ok|fail``, ``connected``, ``connect-failed``,
    ``tls client|upstream``, ``client-eof``, ``upstream-eof``

Lines starting with ``#`` are comments. Parsing is pure; the caller reads
the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .events import Event, Side
from .session import Session
from .settings import AuthMethod


@dataclass
class Step:
    """One input of a transcript and the expectations that follow it.

    :param kind: ``client``, ``upstream`` or ``answer``.
    """

    kind: str
    data: bytes = b""
    answer: str = ""
    to_client: bytes = b""
    to_upstream: bytes = b""
    forwarded_up: bytes = b""
    forwarded_back: bytes = b""
    expected_events: list[str] = field(default_factory=list)
    line_number: int = 0


def transcript_options(text: str) -> dict[str, str]:
    """Return the ``! key=value`` settings of a transcript."""
    options = {}
    for raw in text.splitlines():
        if raw.startswith("!"):
            key, _, value = raw[1:].strip().partition("=")
            options[key] = value
    return options


def parse_transcript(text: str) -> list[Step]:
    """Parse a transcript into input steps with their expectations."""
    steps: list[Step] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.startswith(("#", "!")):
            continue
        prefix, body = raw[:2], raw[3:] if len(raw) > 2 else ""
        line = body.encode("utf-8") + b"\r\n"
        if prefix in ("C:", "U:"):
            kind = "client" if prefix == "C:" else "upstream"
            last = steps[-1] if steps else None
            if last and last.kind == kind and not _has_expectations(last):
                last.data += line
            else:
                steps.append(Step(kind=kind, data=line, line_number=number))
        elif raw.startswith("="):
            steps.append(
                Step(kind="answer", answer=raw[1:].strip(), line_number=number)
            )
        elif prefix == "S:":
            steps[-1].to_client += line
        elif prefix == "P:":
            steps[-1].to_upstream += line
        elif prefix == "F:":
            steps[-1].forwarded_up += line
        elif prefix == "B:":
            steps[-1].forwarded_back += line
        elif raw.startswith("~"):
            steps[-1].expected_events.append(raw[1:].strip())
        else:
            raise ValueError(f"line {number}: cannot parse {raw[:40]!r}")
    return steps


def _has_expectations(step: Step) -> bool:
    return bool(
        step.to_client
        or step.to_upstream
        or step.forwarded_up
        or step.forwarded_back
        or step.expected_events
    )


def apply_answer(session: Session, text: str) -> list[Event]:
    """Perform one ``=`` driver answer on ``session``.

    :raises ValueError: for an answer this format does not define.
    """
    words = text.split()
    verb = words[0]
    if verb in ("aaa", "piggyback"):
        group = words[2] if len(words) > 2 else None
        success = words[1] == "ok"
        return session.authentication_result(
            AuthMethod(verb),
            success=success,
            reason="" if success else "rejected in the transcript",
            group=group,
        )
    if verb == "start":
        return session.start()
    if verb == "connected":
        return session.upstream_connected()
    if verb == "connect-failed":
        return session.upstream_failed("connection refused")
    if verb == "tls":
        return session.tls_established(Side(words[1]))
    if verb == "client-eof":
        return session.receive_client(b"")
    if verb == "upstream-eof":
        return session.receive_upstream(b"")
    raise ValueError(f"unknown driver answer {text!r}")

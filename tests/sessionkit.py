"""A driver for tests: runs C:/S: transcripts through a session.

A transcript is a text file of steps, one per line:

``C: text``   the client sends ``text`` + CRLF
``U: text``   the upstream sends ``text`` + CRLF
``S: text``   the proxy must send ``text`` + CRLF to the client
``P: text``   the proxy must send ``text`` + CRLF to the upstream
``F: text``   the proxy must relay ``text`` + CRLF to the upstream
``B: text``   the proxy must relay ``text`` + CRLF back to the client
``~Name arg`` an event of type ``Name`` must follow (``arg`` checked where
              the event has an obvious one: the new state, the method, the
              server name)
``! key=value`` a setting of the session for this transcript
``= answer``  the driver answers: ``aaa ok [group]``, ``aaa fail``,
              ``connected``, ``connect-failed``, ``tls client|upstream``,
              ``client-eof``, ``upstream-eof``

Consecutive ``C:`` (or ``U:``) lines form one input that may be split into
chunks in any way; the events that follow an input are normalized (adjacent
data events of one kind joined) so that every split must give the same list.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mailproxy_core import events as ev
from mailproxy_core.events import Event, Side
from mailproxy_core.session import Session
from mailproxy_core.settings import AuthMethod

Splitter = Callable[[bytes], Iterator[bytes]]


def whole(data: bytes) -> Iterator[bytes]:
    """Feed the input in one piece."""
    yield data


def byte_by_byte(data: bytes) -> Iterator[bytes]:
    """Feed the input one byte at a time."""
    for index in range(len(data)):
        yield data[index : index + 1]


def random_splits(seed: int) -> Splitter:
    """Return a splitter that cuts the input at random places."""

    def split(data: bytes) -> Iterator[bytes]:
        generator = random.Random(seed)
        position = 0
        while position < len(data):
            size = generator.randint(1, max(1, len(data) - position))
            yield data[position : position + size]
            position += size

    return split


@dataclass
class Step:
    """One input of a transcript and the expectations that follow it."""

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
            raise ValueError(f"line {number}: cannot parse {raw!r}")
    return steps


def _has_expectations(step: Step) -> bool:
    return bool(
        step.to_client
        or step.to_upstream
        or step.forwarded_up
        or step.forwarded_back
        or step.expected_events
    )


def normalize(events: list[Event]) -> list[Event]:
    """Join adjacent data events of the same kind and direction."""
    result: list[Event] = []
    for event in events:
        previous = result[-1] if result else None
        if isinstance(event, ev.SendToClient) and isinstance(previous, ev.SendToClient):
            result[-1] = ev.SendToClient(data=previous.data + event.data)
        elif isinstance(event, ev.SendToUpstream) and isinstance(
            previous, ev.SendToUpstream
        ):
            result[-1] = ev.SendToUpstream(data=previous.data + event.data)
        elif (
            isinstance(event, ev.ForwardData)
            and isinstance(previous, ev.ForwardData)
            and previous.direction is event.direction
        ):
            joined = previous.data + event.data
            result[-1] = ev.ForwardData(direction=event.direction, data=joined)
        else:
            result.append(event)
    return result


def answer(session: Session, text: str) -> list[Event]:
    """Perform one ``=`` driver answer on ``session``."""
    words = text.split()
    verb = words[0]
    if verb == "aaa":
        group = words[2] if len(words) > 2 else None
        success = words[1] == "ok"
        return session.authentication_result(
            AuthMethod.AAA,
            success=success,
            reason="" if success else "test",
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
    raise ValueError(f"unknown answer {text!r}")


def run_steps(
    session: Session, steps: list[Step], splitter: Splitter = whole
) -> list[list[Event]]:
    """Run every step and return the normalized events of each."""
    results = []
    for step in steps:
        collected: list[Event] = []
        if step.kind == "answer":
            collected = answer(session, step.answer)
        else:
            feed = (
                session.receive_client
                if step.kind == "client"
                else session.receive_upstream
            )
            for chunk in splitter(step.data):
                collected.extend(feed(chunk))
        results.append(normalize(collected))
    return results


def check_expectations(steps: list[Step], results: list[list[Event]]) -> None:
    """Assert that each step's events match the transcript."""
    for step, events in zip(steps, results, strict=True):
        where = f"transcript line {step.line_number}"
        to_client = b"".join(e.data for e in events if isinstance(e, ev.SendToClient))
        to_upstream = b"".join(
            e.data for e in events if isinstance(e, ev.SendToUpstream)
        )
        assert to_client == step.to_client, where
        assert to_upstream == step.to_upstream, where
        up = ev.Direction.TO_UPSTREAM
        forwarded = [e for e in events if isinstance(e, ev.ForwardData)]
        forwarded_up = b"".join(e.data for e in forwarded if e.direction is up)
        forwarded_back = b"".join(e.data for e in forwarded if e.direction is not up)
        assert forwarded_up == step.forwarded_up, where
        assert forwarded_back == step.forwarded_back, where
        names = [_describe(e) for e in events]
        position = 0
        for expected in step.expected_events:
            while position < len(names) and not names[position].startswith(expected):
                position += 1
            assert position < len(names), f"{where}: missing {expected!r} in {names}"
            position += 1


def _describe(event: Event) -> str:
    name = type(event).__name__
    if isinstance(event, ev.StateChanged):
        return f"{name} {event.new.value}"
    if isinstance(event, (ev.AuthenticationRequired, ev.AuthenticationSucceeded)):
        return f"{name} {event.method.value}"
    if isinstance(event, ev.AuthenticationFailed):
        method = event.method.value if event.method else "none"
        return f"{name} {method}"
    if isinstance(event, ev.UpstreamSelected):
        return f"{name} {event.server.name}"
    if isinstance(event, ev.StartTLS):
        return f"{name} {event.side.value}"
    return name


def load_transcript(path: Path) -> list[Step]:
    """Read and parse a transcript file."""
    return parse_transcript(path.read_text(encoding="utf-8"))

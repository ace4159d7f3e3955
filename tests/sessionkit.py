"""A driver for tests: runs transcripts through a session.

The format is :mod:`mailproxy_core.transcript`'s. Consecutive ``C:`` (or
``U:``) lines form one input that may be split into chunks in any way; the
events that follow an input are normalized (adjacent data events of one
kind joined) so that every split must give the same list.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

from mailproxy_core import events as ev
from mailproxy_core.events import Event
from mailproxy_core.session import Session
from mailproxy_core.transcript import (
    Step,
    apply_answer,
    parse_transcript,
    transcript_options,
)

__all__ = ["Step", "parse_transcript", "transcript_options"]

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


def run_steps(
    session: Session, steps: list[Step], splitter: Splitter = whole
) -> list[list[Event]]:
    """Run every step and return the normalized events of each."""
    results = []
    for step in steps:
        collected: list[Event] = []
        if step.kind == "answer":
            collected = apply_answer(session, step.answer)
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

"""Relay throughput of an authenticated IMAP session, in 64 KiB chunks."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Final

from login import authenticated_session
from measure import Plan, Round, time_pair
from report import Figure, Measurement

from mailproxy_core.events import Event, ForwardData

CHUNK_SIZE: Final = 64 * 1024
#: Distinct chunk objects that a round cycles through.
POOL_SIZE: Final = 16

FULL: Final = Plan(warmup=2, repeats=9)
QUICK: Final = Plan(warmup=1, repeats=5)
FULL_CHUNKS: Final = 200_000
QUICK_CHUNKS: Final = 20_000

Receive = Callable[[bytes], list[Event]]


def make_chunks(count: int) -> list[bytes]:
    """Return ``count`` references to :data:`POOL_SIZE` distinct chunks."""
    pool = [bytes([index]) * CHUNK_SIZE for index in range(POOL_SIZE)]
    return list(itertools.islice(itertools.cycle(pool), count))


def hand_on(chunk: bytes) -> tuple[bytes]:
    """Wrap a chunk as the cheapest possible relay step would."""
    return (chunk,)


def relay_bare(chunks: list[bytes]) -> int:
    """Pass each chunk through :func:`hand_on` and sum the lengths.

    :returns: the bytes handed on.
    """
    total = 0
    for chunk in chunks:
        for piece in hand_on(chunk):
            total += len(piece)
    return total


def relay_core(receive: Receive, chunks: list[bytes]) -> int:
    """Feed each chunk to a session and sum the forwarded lengths.

    :param receive: ``receive_client`` or ``receive_upstream`` of an
        authenticated session.
    :returns: the bytes forwarded.
    :raises RuntimeError: when the session returns anything but
        :class:`ForwardData`.
    """
    total = 0
    for chunk in chunks:
        for event in receive(chunk):
            # A driver dispatches on the event type, so the loop does too.
            if not isinstance(event, ForwardData):
                raise RuntimeError(f"relay returned {event!r}")
            total += len(event.data)
    return total


def _megabytes_per_second(rounds: list[Round], expected: int) -> tuple[float, ...]:
    for timed in rounds:
        if timed.work != expected:
            raise RuntimeError(f"a round relayed {timed.work} bytes, not {expected}")
    return tuple(timed.per_second() / 1e6 for timed in rounds)


def _figure(
    name: str, title: str, receive: Receive, chunks: list[bytes], plan: Plan
) -> Figure:
    expected = CHUNK_SIZE * len(chunks)
    core, bare = time_pair(
        lambda: relay_core(receive, chunks), lambda: relay_bare(chunks), plan
    )
    return Figure(
        name=name,
        title=title,
        unit="MB/s",
        subject=Measurement(
            label="core ImapSession", samples=_megabytes_per_second(core, expected)
        ),
        baseline=Measurement(
            label="bare hand-on loop", samples=_megabytes_per_second(bare, expected)
        ),
        ratio_of="core / bare",
        details=(("chunk_bytes", CHUNK_SIZE), ("chunks_per_round", len(chunks))),
    )


def run(quick: bool) -> list[Figure]:
    """Measure relay throughput in both directions.

    :param quick: use the short plan of ``--quick``.
    :returns: one figure for each direction.
    """
    plan, count = (QUICK, QUICK_CHUNKS) if quick else (FULL, FULL_CHUNKS)
    chunks = make_chunks(count)
    session = authenticated_session()
    return [
        _figure(
            "relay_to_upstream",
            "relay client to upstream",
            session.receive_client,
            chunks,
            plan,
        ),
        _figure(
            "relay_to_client",
            "relay upstream to client",
            session.receive_upstream,
            chunks,
            plan,
        ),
    ]

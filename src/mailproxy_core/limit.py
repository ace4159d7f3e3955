"""The per-listener limit on connections that have not authenticated yet.

Connections in the unauthenticated and authenticating states count toward
the limit. When a newly accepted connection would exceed it, the limit
names an older connection for the driver to terminate: the oldest
unauthenticated one or, if there is none, the oldest authenticating one.
Authenticated connections never count and are never terminated. Age is
accept order: a connection whose login fails returns to unauthenticated
and keeps its place.

The class does no I/O. The driver reports each accept, state change and
close, and terminates the connections that :meth:`SessionLimit.open`
returns.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from .errors import ConfigurationError, LocalProtocolError
from .states import ConnectionState, check_transition, counts_toward_limit

K = TypeVar("K", bound=Hashable)

#: The limit that a listener uses unless configured otherwise.
DEFAULT_LIMIT: Final = 20

_COUNTED: Final = (ConnectionState.UNAUTHENTICATED, ConnectionState.AUTHENTICATING)

# Each heap entry is (accept sequence, entry token, connection id). Tokens are
# unique, so tuple comparison never reaches the id, which need not be ordered.
_HeapEntry = tuple[int, int, K]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Connection:
    """A tracked connection.

    :param state: the connection's current state.
    :param sequence: the accept order; smaller is older.
    :param token: the token of the connection's one live heap entry, or
        ``None`` in a state that has no heap.
    """

    state: ConnectionState
    sequence: int
    token: int | None


def _validate_limit(limit: int | None) -> int | None:
    """Return the limit to enforce, or ``None`` when it is disabled.

    :raises ConfigurationError: unless ``limit`` is ``None`` or an integer of
        0 or more.
    """
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigurationError(
            f"limit = {limit!r} is invalid; use a positive number of "
            "connections, or 0 or None to disable the limit"
        )
    return limit or None


class SessionLimit(Generic[K]):
    """The limit on one listener's connections that have not authenticated.

    The driver chooses the connection ids; any hashable value works. The
    class keeps one binary heap per counted state, ordered by accept
    sequence. A connection that leaves a state leaves a stale entry in
    that state's heap. Stale entries are skipped when popped and dropped
    when a heap contains more stale entries than live ones, so each heap
    contains at most twice as many entries as it has live ones. That rebuild
    makes the call that triggers it cost O(n), which is why the costs
    below are amortized.

    :param limit: the maximum number of counted connections; 0 or ``None``
        disables the limit.
    :raises ConfigurationError: when ``limit`` is negative or not an integer.
    """

    __slots__ = ("_connections", "_heaps", "_limit", "_live", "_sequences", "_tokens")

    def __init__(self, limit: int | None = DEFAULT_LIMIT) -> None:
        self._limit = _validate_limit(limit)
        self._connections: dict[K, _Connection] = {}
        self._heaps: dict[ConnectionState, list[_HeapEntry[K]]] = {
            state: [] for state in _COUNTED
        }
        self._live = dict.fromkeys(_COUNTED, 0)
        self._sequences = itertools.count()
        self._tokens = itertools.count()

    @property
    def limit(self) -> int | None:
        """The maximum number of counted connections, or ``None`` if disabled.

        A limit configured as 0 reads as ``None``. Cost: O(1).
        """
        return self._limit

    @property
    def counted(self) -> int:
        """The number of tracked connections that count toward the limit.

        Cost: O(1).
        """
        return sum(self._live.values())

    def __len__(self) -> int:
        """Return the number of tracked connections in any state. Cost: O(1)."""
        return len(self._connections)

    def __contains__(self, connection_id: object) -> bool:
        """Return whether ``connection_id`` is tracked. Cost: O(1)."""
        return connection_id in self._connections

    def state(self, connection_id: K) -> ConnectionState:
        """Return the state of a connection.

        Cost: O(1).

        :param connection_id: the driver's id of the connection.
        :returns: the connection's state, or
            :attr:`~ConnectionState.CLOSED` when the id is not tracked
            (never opened, closed, or evicted).
        """
        connection = self._connections.get(connection_id)
        if connection is None:
            return ConnectionState.CLOSED
        return connection.state

    def open(self, connection_id: K) -> list[K]:
        """Register a newly accepted connection as unauthenticated.

        The driver calls this at accept time, before the TLS handshake. If
        the new connection would exceed the limit, an older counted
        connection is evicted to make room. The new connection itself is
        never evicted. Cost: amortized O(log n) for n tracked connections.

        :param connection_id: the driver's id of the new connection.
        :returns: the ids of the evicted connections, at most one because
            no other call raises the count. They are no longer tracked, and
            the driver must terminate them.
        :raises LocalProtocolError: when ``connection_id`` is already
            tracked.
        """
        if connection_id in self._connections:
            raise LocalProtocolError(
                f"connection {connection_id!r} is already open; close it first"
            )

        evicted = self._make_room()

        sequence = next(self._sequences)
        self._enter(connection_id, ConnectionState.UNAUTHENTICATED, sequence)
        return evicted

    def transition(self, connection_id: K, state: ConnectionState) -> None:
        """Move a tracked connection to another state.

        Moving to :attr:`~ConnectionState.CLOSED` stops tracking the
        connection, like :meth:`close`. A connection that returns from authenticating to
        unauthenticated keeps its accept order. Cost: amortized O(log n).

        :param connection_id: the driver's id of the connection.
        :param state: the new state; it must be in
            :data:`~mailproxy_core.states.TRANSITIONS` of the current state.
        :raises LocalProtocolError: when the id is not tracked (never opened,
            closed, or evicted) or the move is illegal.
        """
        connection = self._connections.get(connection_id)
        if connection is None:
            raise LocalProtocolError(
                f"connection {connection_id!r} is not open; it was never "
                "opened, or it was closed or evicted"
            )
        check_transition(connection.state, state)

        self._leave(connection_id)
        if state is not ConnectionState.CLOSED:
            self._enter(connection_id, state, connection.sequence)

    def close(self, connection_id: K) -> None:
        """Stop tracking a connection that the driver closed.

        Closing an id that is not tracked does nothing, because the driver
        may close a connection after :meth:`open` evicted it and stopped
        tracking it. Cost: amortized O(1).

        :param connection_id: the driver's id of the connection.
        """
        if connection_id in self._connections:
            self._leave(connection_id)

    def _heap_sizes(self) -> dict[ConnectionState, int]:
        """Return the number of entries, stale ones included, in each heap.

        Tests use it to check that stale entries do not pile up.
        """
        return {state: len(heap) for state, heap in self._heaps.items()}

    def _make_room(self) -> list[K]:
        """Evict connections until one more fits under the limit."""
        evicted: list[K] = []
        if self._limit is None:
            return evicted

        # With a limit of at least 1, the counted connections are all older
        # than the one being opened, so the victim is never the new one.
        while self.counted >= self._limit:
            victim = self._pop_oldest(ConnectionState.UNAUTHENTICATED)
            if victim is None:
                victim = self._pop_oldest(ConnectionState.AUTHENTICATING)
            if victim is None:
                break
            self._leave(victim)
            evicted.append(victim)
        return evicted

    def _pop_oldest(self, state: ConnectionState) -> K | None:
        """Pop the oldest live entry of ``state``'s heap; skip stale ones."""
        heap = self._heaps[state]
        while heap:
            _, token, connection_id = heapq.heappop(heap)
            if self._is_live(token, connection_id):
                return connection_id
        return None

    def _is_live(self, token: int, connection_id: K) -> bool:
        """Return whether a heap entry belongs to the connection's state now.

        Tokens are never reused, and a connection stores only the token of
        its current entry. An entry left by an earlier state, or by a
        connection that was closed and then opened again, therefore fails.
        """
        connection = self._connections.get(connection_id)
        return connection is not None and connection.token == token

    def _enter(self, connection_id: K, state: ConnectionState, sequence: int) -> None:
        """Record a connection in ``state``; push a heap entry if it counts."""
        token = None
        if counts_toward_limit(state):
            token = next(self._tokens)
            heapq.heappush(self._heaps[state], (sequence, token, connection_id))
            self._live[state] += 1
        self._connections[connection_id] = _Connection(
            state=state, sequence=sequence, token=token
        )

    def _leave(self, connection_id: K) -> None:
        """Stop tracking a connection; its heap entry, if any, turns stale."""
        state = self._connections.pop(connection_id).state
        if counts_toward_limit(state):
            self._live[state] -= 1
            self._compact_if_stale(state)

    def _compact_if_stale(self, state: ConnectionState) -> None:
        """Drop the stale entries of a heap that has more stale than live ones.

        The rebuild costs O(size), and at least half of that size is stale
        entries, each left by one earlier call. So the cost per call stays
        amortized O(1).
        """
        heap = self._heaps[state]
        live = self._live[state]
        if len(heap) - live <= live:
            return

        heap[:] = [entry for entry in heap if self._is_live(entry[1], entry[2])]
        heapq.heapify(heap)

"""Tests of the per-listener limit on connections that have not authenticated."""

from __future__ import annotations

import time

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from mailproxy_core.errors import ConfigurationError, LocalProtocolError
from mailproxy_core.limit import DEFAULT_LIMIT, SessionLimit
from mailproxy_core.states import TRANSITIONS, ConnectionState, counts_toward_limit

UNAUTHENTICATED = ConnectionState.UNAUTHENTICATED
AUTHENTICATING = ConnectionState.AUTHENTICATING
AUTHENTICATED = ConnectionState.AUTHENTICATED
CLOSED = ConnectionState.CLOSED


def open_all(limit: SessionLimit[str], *connection_ids: str) -> None:
    """Open each id and fail if any open evicts a connection."""
    for connection_id in connection_ids:
        assert limit.open(connection_id) == []


# Configuration


def test_default_limit_is_twenty() -> None:
    assert SessionLimit[int]().limit == DEFAULT_LIMIT == 20


@pytest.mark.parametrize("value", [-1, -20])
def test_negative_limit_raises(value: int) -> None:
    with pytest.raises(ConfigurationError, match="limit"):
        SessionLimit[int](value)


@pytest.mark.parametrize("value", [True, 2.5, "20"])
def test_non_integer_limit_raises(value: object) -> None:
    with pytest.raises(ConfigurationError, match="limit"):
        SessionLimit[int](value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, None])
def test_disabled_limit_never_evicts(value: int | None) -> None:
    limit = SessionLimit[int](value)

    evicted = [limit.open(connection_id) for connection_id in range(1000)]

    assert limit.limit is None
    assert all(victims == [] for victims in evicted)
    assert limit.counted == 1000
    assert len(limit) == 1000


# Eviction order


def test_evicts_oldest_unauthenticated_first() -> None:
    limit = SessionLimit[str](3)
    open_all(limit, "a", "b", "c")
    limit.transition("a", AUTHENTICATING)

    assert limit.open("d") == ["b"]
    assert "b" not in limit
    assert limit.state("a") is AUTHENTICATING
    assert limit.counted == 3


def test_evicts_oldest_authenticating_without_unauthenticated() -> None:
    limit = SessionLimit[str](2)
    open_all(limit, "a", "b")
    limit.transition("b", AUTHENTICATING)
    limit.transition("a", AUTHENTICATING)

    # "a" entered authenticating later but was accepted earlier.
    assert limit.open("c") == ["a"]
    assert limit.state("b") is AUTHENTICATING
    assert limit.state("c") is UNAUTHENTICATED


def test_authenticated_never_evicted_nor_counted() -> None:
    limit = SessionLimit[str](1)
    limit.open("a")
    limit.transition("a", AUTHENTICATING)
    limit.transition("a", AUTHENTICATED)

    assert limit.counted == 0
    assert limit.open("b") == []
    assert limit.open("c") == ["b"]
    assert limit.state("a") is AUTHENTICATED
    assert len(limit) == 2


def test_failed_login_keeps_accept_order() -> None:
    limit = SessionLimit[str](3)
    open_all(limit, "a", "b", "c")
    limit.transition("a", AUTHENTICATING)
    limit.transition("a", UNAUTHENTICATED)

    assert limit.open("d") == ["a"]
    assert limit.open("e") == ["b"]


def test_new_connection_never_victim() -> None:
    limit = SessionLimit[str](1)
    limit.open("a")
    limit.transition("a", AUTHENTICATING)

    # "b" is the only unauthenticated connection once opened, but the victim
    # comes from the connections that were there before it.
    assert limit.open("b") == ["a"]
    assert limit.open("c") == ["b"]
    assert limit.state("c") is UNAUTHENTICATED


def test_reopened_id_gets_new_age() -> None:
    limit = SessionLimit[str](2)
    limit.open("a")
    limit.close("a")
    open_all(limit, "b", "a")

    # The heap entry left by the first "a" is older than "b" but stale.
    assert limit.open("c") == ["b"]
    assert limit.open("d") == ["a"]


def test_unorderable_ids_work() -> None:
    limit = SessionLimit[object](2)
    first, second, third = object(), object(), object()
    limit.open(first)
    limit.open(second)

    assert limit.open(third) == [first]


# Bookkeeping and errors


def test_state_and_membership() -> None:
    limit = SessionLimit[str](5)
    limit.open("a")
    limit.open("b")
    limit.transition("b", AUTHENTICATING)

    assert limit.state("a") is UNAUTHENTICATED
    assert limit.state("b") is AUTHENTICATING
    assert limit.state("unknown") is CLOSED
    assert "a" in limit
    assert "unknown" not in limit
    assert len(limit) == 2
    assert limit.counted == 2


def test_transition_to_closed_untracks() -> None:
    limit = SessionLimit[str](5)
    limit.open("a")
    limit.transition("a", CLOSED)

    assert "a" not in limit
    assert limit.state("a") is CLOSED
    assert limit.counted == 0


def test_close_untracks_any_state() -> None:
    limit = SessionLimit[str](5)
    open_all(limit, "a", "b", "c")
    limit.transition("b", AUTHENTICATING)
    limit.transition("c", AUTHENTICATING)
    limit.transition("c", AUTHENTICATED)

    for connection_id in ("a", "b", "c"):
        limit.close(connection_id)

    assert len(limit) == 0
    assert limit.counted == 0


def test_close_of_evicted_id_is_noop() -> None:
    limit = SessionLimit[str](1)
    limit.open("a")
    assert limit.open("b") == ["a"]

    limit.close("a")
    limit.close("never-opened")

    assert len(limit) == 1
    assert limit.state("b") is UNAUTHENTICATED


def test_transition_of_evicted_id_raises() -> None:
    limit = SessionLimit[str](1)
    limit.open("a")
    limit.open("b")

    with pytest.raises(LocalProtocolError, match="not open"):
        limit.transition("a", AUTHENTICATING)


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ((), UNAUTHENTICATED),
        ((), AUTHENTICATED),
        ((AUTHENTICATING,), AUTHENTICATING),
        ((AUTHENTICATING, AUTHENTICATED), UNAUTHENTICATED),
        ((AUTHENTICATING, AUTHENTICATED), AUTHENTICATING),
    ],
)
def test_illegal_transition_raises(
    path: tuple[ConnectionState, ...], illegal: ConnectionState
) -> None:
    limit = SessionLimit[str](5)
    limit.open("a")
    for state in path:
        limit.transition("a", state)
    before = limit.state("a")

    with pytest.raises(LocalProtocolError, match="illegal state transition"):
        limit.transition("a", illegal)
    assert limit.state("a") is before


def test_duplicate_open_raises() -> None:
    limit = SessionLimit[str](5)
    limit.open("a")
    limit.transition("a", AUTHENTICATING)

    with pytest.raises(LocalProtocolError, match="already open"):
        limit.open("a")
    assert limit.state("a") is AUTHENTICATING
    assert len(limit) == 1


# Comparison with a reference model


class ReferenceLimit:
    """The limit's rules written as plain O(n) scans of a dict.

    A dict keeps its insertion order when a key's value changes, so the
    order of ``states`` is the accept order.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit or None
        self.states: dict[int, ConnectionState] = {}

    def counted(self) -> int:
        return sum(counts_toward_limit(state) for state in self.states.values())

    def open(self, connection_id: int) -> list[int]:
        evicted = []
        while self.limit is not None and self.counted() >= self.limit:
            victim = self.oldest(UNAUTHENTICATED)
            if victim is None:
                victim = self.oldest(AUTHENTICATING)
            assert victim is not None
            del self.states[victim]
            evicted.append(victim)
        self.states[connection_id] = UNAUTHENTICATED
        return evicted

    def oldest(self, state: ConnectionState) -> int | None:
        for connection_id, current in self.states.items():
            if current is state:
                return connection_id
        return None

    def transition(self, connection_id: int, state: ConnectionState) -> None:
        if state is CLOSED:
            del self.states[connection_id]
        else:
            self.states[connection_id] = state


# A small pool of ids, so that ids are often closed or evicted and reopened.
CONNECTION_IDS = st.integers(min_value=0, max_value=11)


def by_value(states: frozenset[ConnectionState]) -> list[ConnectionState]:
    return sorted(states, key=lambda state: state.value)


class LimitMachine(RuleBasedStateMachine):
    """Drive a SessionLimit and the reference model with the same calls."""

    def __init__(self) -> None:
        super().__init__()
        self.limit = SessionLimit[int]()
        self.model = ReferenceLimit(DEFAULT_LIMIT)

    @initialize(configured=st.none() | st.integers(min_value=0, max_value=5))
    def configure(self, configured: int | None) -> None:
        self.limit = SessionLimit[int](configured)
        self.model = ReferenceLimit(configured)

    @rule(connection_id=CONNECTION_IDS)
    def open(self, connection_id: int) -> None:
        if connection_id in self.model.states:
            with pytest.raises(LocalProtocolError):
                self.limit.open(connection_id)
            return

        before = dict(self.model.states)
        expected = self.model.open(connection_id)
        evicted = self.limit.open(connection_id)

        assert evicted == expected
        for victim in evicted:
            assert before[victim] is not AUTHENTICATED
        if self.model.limit is not None:
            assert self.limit.counted <= self.model.limit

    @precondition(lambda self: self.model.states)
    @rule(data=st.data())
    def transition(self, data: st.DataObject) -> None:
        connection_id = data.draw(st.sampled_from(sorted(self.model.states)))
        old = self.model.states[connection_id]
        new = data.draw(st.sampled_from(by_value(TRANSITIONS[old])))

        self.model.transition(connection_id, new)
        self.limit.transition(connection_id, new)

    @rule(connection_id=CONNECTION_IDS, new=st.sampled_from(ConnectionState))
    def illegal_transition(self, connection_id: int, new: ConnectionState) -> None:
        old = self.model.states.get(connection_id, CLOSED)
        if new in TRANSITIONS[old]:
            return

        with pytest.raises(LocalProtocolError):
            self.limit.transition(connection_id, new)

    @rule(connection_id=CONNECTION_IDS)
    def close(self, connection_id: int) -> None:
        self.model.states.pop(connection_id, None)
        self.limit.close(connection_id)

    @invariant()
    def agrees_with_model(self) -> None:
        assert len(self.limit) == len(self.model.states)
        assert self.limit.counted == self.model.counted()
        for connection_id in range(12):
            expected = self.model.states.get(connection_id, CLOSED)
            assert self.limit.state(connection_id) is expected
            assert (connection_id in self.limit) == (expected is not CLOSED)

    @invariant()
    def heaps_stay_bounded(self) -> None:
        for state, size in self.limit._heap_sizes().items():
            live = sum(s is state for s in self.model.states.values())
            assert size <= 2 * live


LimitMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None
)
TestLimitMachine = LimitMachine.TestCase


# Scale


def churn(limit: SessionLimit[int], count: int) -> None:
    """Open ``count`` connections and move most of them along at once.

    Of every five connections, one starts a login, one fails a login, one
    authenticates, one closes and one stays unauthenticated. The heap sizes
    are checked every 1000 connections.
    """
    for connection_id in range(count):
        limit.open(connection_id)
        step = connection_id % 5
        if step in (0, 1, 2):
            limit.transition(connection_id, AUTHENTICATING)
        if step == 1:
            limit.transition(connection_id, UNAUTHENTICATED)
        if step == 2:
            limit.transition(connection_id, AUTHENTICATED)
        if step == 3:
            limit.close(connection_id)
        if connection_id % 1000 == 0:
            assert_heaps_bounded(limit)


def assert_heaps_bounded(limit: SessionLimit[int]) -> None:
    counted = limit.counted
    for size in limit._heap_sizes().values():
        assert size <= 2 * counted


def test_scale_small_limit_with_churn() -> None:
    limit = SessionLimit[int](20)
    started = time.perf_counter()

    churn(limit, 200_000)

    elapsed = time.perf_counter() - started
    # The loop took about 1.3 s on a 2-core development machine. The budget
    # is loose, because it only has to catch a cost that grows with n.
    assert elapsed < 10
    assert limit.counted == 20
    # Authenticated connections stay tracked: one of every five.
    assert len(limit) == 40_000 + 20
    assert_heaps_bounded(limit)


def test_scale_large_limit_with_churn() -> None:
    limit = SessionLimit[int](50_000)
    started = time.perf_counter()

    churn(limit, 200_000)

    elapsed = time.perf_counter() - started
    assert elapsed < 10
    assert limit.counted == 50_000
    assert_heaps_bounded(limit)

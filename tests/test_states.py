"""Tests of the connection-state table and its checks."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailproxy_core.errors import LocalProtocolError
from mailproxy_core.states import (
    TRANSITIONS,
    ConnectionState,
    check_transition,
    counts_toward_limit,
)

STATES = st.sampled_from(ConnectionState)


@given(old=STATES, new=STATES)
def test_check_transition_matches_table(
    old: ConnectionState, new: ConnectionState
) -> None:
    if new in TRANSITIONS[old]:
        check_transition(old, new)
        return

    with pytest.raises(LocalProtocolError, match="illegal state transition") as info:
        check_transition(old, new)
    assert old.value in str(info.value)
    assert new.value in str(info.value)


@pytest.mark.parametrize(
    ("old", "new"), list(itertools.product(ConnectionState, repeat=2))
)
def test_check_transition_every_pair(
    old: ConnectionState, new: ConnectionState
) -> None:
    if new in TRANSITIONS[old]:
        check_transition(old, new)
    else:
        with pytest.raises(LocalProtocolError):
            check_transition(old, new)


def test_table_has_row_per_state() -> None:
    assert set(TRANSITIONS) == set(ConnectionState)
    for targets in TRANSITIONS.values():
        assert targets <= set(ConnectionState)


def test_no_state_moves_to_itself() -> None:
    for state, targets in TRANSITIONS.items():
        assert state not in targets


def test_closed_is_terminal() -> None:
    assert TRANSITIONS[ConnectionState.CLOSED] == frozenset()


@given(new=STATES)
def test_nothing_leaves_closed(new: ConnectionState) -> None:
    with pytest.raises(LocalProtocolError):
        check_transition(ConnectionState.CLOSED, new)


def test_every_state_reaches_closed() -> None:
    for state in ConnectionState:
        if state is not ConnectionState.CLOSED:
            assert ConnectionState.CLOSED in TRANSITIONS[state]


def test_every_state_reachable_from_unauthenticated() -> None:
    reached = {ConnectionState.UNAUTHENTICATED}
    frontier = [ConnectionState.UNAUTHENTICATED]
    while frontier:
        for target in TRANSITIONS[frontier.pop()]:
            if target not in reached:
                reached.add(target)
                frontier.append(target)

    assert reached == set(ConnectionState)


def test_failed_login_returns_to_unauthenticated() -> None:
    check_transition(ConnectionState.AUTHENTICATING, ConnectionState.UNAUTHENTICATED)


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        TRANSITIONS[ConnectionState.CLOSED] = frozenset()  # type: ignore[index]


@pytest.mark.parametrize(
    ("state", "counted"),
    [
        (ConnectionState.UNAUTHENTICATED, True),
        (ConnectionState.AUTHENTICATING, True),
        (ConnectionState.AUTHENTICATED, False),
        (ConnectionState.CLOSED, False),
    ],
)
def test_counts_toward_limit(state: ConnectionState, counted: bool) -> None:
    assert counts_toward_limit(state) is counted

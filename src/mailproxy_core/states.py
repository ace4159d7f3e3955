"""The connection-state model shared by every protocol.

Every client connection is in exactly one :class:`ConnectionState`. The
legal moves are the rows of :data:`TRANSITIONS`; anything else raises
:class:`~mailproxy_core.errors.LocalProtocolError`. The documentation's
state diagram is generated from this table.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from .errors import LocalProtocolError


class ConnectionState(enum.Enum):
    """The position of a client connection in the login."""

    # Members are singletons, so identity hashing is correct, and it avoids
    # the Python-level Enum.__hash__ of CPython 3.11 on every lookup.
    __hash__ = object.__hash__

    #: Accepted; no user name presented yet.
    UNAUTHENTICATED = "unauthenticated"
    #: A user name was presented; authentication or the upstream login runs.
    AUTHENTICATING = "authenticating"
    #: The proxy authenticated the user; bytes are relayed.
    AUTHENTICATED = "authenticated"
    #: The connection is over.
    CLOSED = "closed"


_S = ConnectionState

#: The states each state may move to. A failed login returns from
#: authenticating to unauthenticated.
TRANSITIONS: Final[Mapping[ConnectionState, frozenset[ConnectionState]]] = (
    MappingProxyType(
        {
            _S.UNAUTHENTICATED: frozenset({_S.AUTHENTICATING, _S.CLOSED}),
            _S.AUTHENTICATING: frozenset(
                {_S.AUTHENTICATED, _S.UNAUTHENTICATED, _S.CLOSED}
            ),
            _S.AUTHENTICATED: frozenset({_S.CLOSED}),
            _S.CLOSED: frozenset(),
        }
    )
)


def check_transition(old: ConnectionState, new: ConnectionState) -> None:
    """Raise unless ``old`` may move to ``new``.

    :raises LocalProtocolError: for a move that :data:`TRANSITIONS` lacks.
    """
    if new not in TRANSITIONS[old]:
        raise LocalProtocolError(f"illegal state transition {old.value} -> {new.value}")


def counts_toward_limit(state: ConnectionState) -> bool:
    """Whether a connection in ``state`` counts toward the session limit."""
    return state in (_S.UNAUTHENTICATED, _S.AUTHENTICATING)

"""Cost per operation of :class:`SessionLimit` at two numbers of connections.

Each size gets a limit filled to capacity with unauthenticated connections,
with the limit equal to that size. Each workload step then does what a
driver does for one new connection:

* ``open`` the new connection, which evicts the oldest counted one
  whenever the count is at the limit;
* move it to authenticating, then to authenticated (odd ids) or back to
  unauthenticated after a failed login (even ids);
* for every odd id and every id divisible by 4, ``close`` the connection
  :data:`CLOSE_LAG` ids back, which is authenticated (odd ids) or
  unauthenticated after a failed login (even ids).

So the count stays at or just below the limit, one open in four evicts,
and the
failed logins leave stale heap entries that trigger the limit's heap
rebuilds. A round has at least as many steps as the limit has
connections, so every round at the large size includes its share of
those O(n) rebuilds, which the docstring of :class:`SessionLimit`
amortizes.
"""

from __future__ import annotations

import gc
from typing import Final

from measure import Plan, time_pair
from report import Figure, Measurement

from mailproxy_core.limit import SessionLimit
from mailproxy_core.states import ConnectionState

SMALL: Final = 1_000
FULL_LARGE: Final = 1_000_000
QUICK_LARGE: Final = 100_000

FULL: Final = Plan(warmup=1, repeats=5)
QUICK: Final = Plan(warmup=1, repeats=3)
FULL_MIN_STEPS: Final = 200_000
QUICK_MIN_STEPS: Final = 20_000

#: How many ids back the connection lies that a step closes. It is even,
#: so an odd id closes an authenticated connection and an even id closes
#: one that failed its login.
CLOSE_LAG: Final = 32

_UNAUTHENTICATED: Final = ConnectionState.UNAUTHENTICATED
_AUTHENTICATING: Final = ConnectionState.AUTHENTICATING
_AUTHENTICATED: Final = ConnectionState.AUTHENTICATED


class Workload:
    """A :class:`SessionLimit` filled to its limit, and the steps run on it.

    :param size: the limit and the number of connections opened first.
    :param min_steps: the minimum number of workload steps in one round.
    """

    def __init__(self, size: int, min_steps: int) -> None:
        self.size = size
        self.limit: SessionLimit[int] = SessionLimit(size)
        _fill(self.limit, size)
        self.steps = max(size, min_steps)
        self.evictions = 0
        self._next_id = size

    def run_round(self) -> int:
        """Run one round of steps on the limit.

        :returns: the number of calls into the limit.
        :raises RuntimeError: when the count left the limit's bounds.
        """
        first = self._next_id
        self._next_id += self.steps
        operations, evictions = run_steps(self.limit, first, self.steps)
        self.evictions += evictions
        low = self.size - CLOSE_LAG
        if not low <= self.limit.counted <= self.size:
            raise RuntimeError(
                f"the limit counts {self.limit.counted} connections, "
                f"expected {low} to {self.size}"
            )
        return operations


def _fill(limit: SessionLimit[int], size: int) -> None:
    # The collector is off because its full passes over a million growing
    # objects would more than double this untimed setup.
    gc.disable()
    try:
        for connection in range(size):
            limit.open(connection)
    finally:
        gc.enable()


def run_steps(limit: SessionLimit[int], first: int, count: int) -> tuple[int, int]:
    """Run ``count`` workload steps for the ids from ``first`` on.

    :returns: the number of calls into the limit and of evictions.
    """
    operations = 0
    evictions = 0
    for connection in range(first, first + count):
        evictions += len(limit.open(connection))
        limit.transition(connection, _AUTHENTICATING)
        if connection % 2:
            limit.transition(connection, _AUTHENTICATED)
            limit.close(connection - CLOSE_LAG)
            operations += 4
        elif connection % 4:
            limit.transition(connection, _UNAUTHENTICATED)
            operations += 3
        else:
            limit.transition(connection, _UNAUTHENTICATED)
            limit.close(connection - CLOSE_LAG)
            operations += 4
    return operations, evictions


def run(quick: bool) -> list[Figure]:
    """Measure nanoseconds per limit operation at a small and a large size.

    :param quick: use the short plan and the smaller large size of
        ``--quick``.
    :returns: one figure, the large size beside the small one.
    """
    plan = QUICK if quick else FULL
    large_size = QUICK_LARGE if quick else FULL_LARGE
    min_steps = QUICK_MIN_STEPS if quick else FULL_MIN_STEPS
    small = Workload(SMALL, min_steps)
    large = Workload(large_size, min_steps)

    large_rounds, small_rounds = time_pair(large.run_round, small.run_round, plan)
    note = ""
    if quick:
        note = (
            f"quick run: the session limit uses {large_size:,} tracked "
            f"connections instead of {FULL_LARGE:,}"
        )
    return [
        Figure(
            name="session_limit",
            title="session limit",
            unit="ns/op",
            subject=Measurement(
                label=f"{large_size:,} tracked",
                samples=tuple(r.ns_per_unit() for r in large_rounds),
            ),
            baseline=Measurement(
                label=f"{SMALL:,} tracked",
                samples=tuple(r.ns_per_unit() for r in small_rounds),
            ),
            ratio_of=f"{_short(large_size)} / {_short(SMALL)}",
            note=note,
            details=_details(small, large),
        )
    ]


def _short(size: int) -> str:
    if size % 1_000_000 == 0:
        return f"{size // 1_000_000}M"
    return f"{size // 1_000}k"


def _details(small: Workload, large: Workload) -> tuple[tuple[str, object], ...]:
    return (
        ("small_tracked", small.size),
        ("large_tracked", large.size),
        ("small_steps_per_round", small.steps),
        ("large_steps_per_round", large.steps),
        ("small_evictions_all_rounds", small.evictions),
        ("large_evictions_all_rounds", large.evictions),
    )

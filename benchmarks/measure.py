"""Timing rounds for the benchmarks: warm-up, alternation and medians."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

#: A benchmark body: it does a fixed amount of work and returns how many
#: units it did (bytes, handshakes or operations).
Body = Callable[[], int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """The number of rounds that one figure runs.

    :param warmup: untimed rounds of each side before timing starts.
    :param repeats: timed rounds of each side. A figure is their median.
    """

    warmup: int
    repeats: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Round:
    """One timed round of a body.

    :param work: units of work that the body reported.
    :param elapsed_ns: wall-clock time from :func:`time.perf_counter_ns`.
    """

    work: int
    elapsed_ns: int

    def per_second(self) -> float:
        """Return the units of work per second."""
        return self.work * 1e9 / self.elapsed_ns

    def ns_per_unit(self) -> float:
        """Return the nanoseconds per unit of work."""
        return self.elapsed_ns / self.work


def time_round(body: Body) -> Round:
    """Run ``body`` once with the garbage collector off, and time it.

    As in :mod:`timeit`, the collector is off, so that a collection of
    earlier garbage does not land in a random round.

    :param body: the work to time.
    :returns: the work it reported and the time it took.
    """
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        work = body()
        elapsed = time.perf_counter_ns() - start
    finally:
        gc.enable()
    return Round(work=work, elapsed_ns=elapsed)


def time_pair(
    subject: Body, baseline: Body, plan: Plan
) -> tuple[list[Round], list[Round]]:
    """Warm up both bodies, then time them in alternating rounds.

    Alternating spreads drift in clock speed or machine load over both
    sides alike, so the ratio of their medians stays fair.

    :param subject: the code under test.
    :param baseline: the code that it is compared with.
    :param plan: how many rounds to run.
    :returns: the timed rounds of the subject and of the baseline.
    """
    for _ in range(plan.warmup):
        subject()
        baseline()

    subject_rounds: list[Round] = []
    baseline_rounds: list[Round] = []
    for _ in range(plan.repeats):
        subject_rounds.append(time_round(subject))
        baseline_rounds.append(time_round(baseline))
    return subject_rounds, baseline_rounds

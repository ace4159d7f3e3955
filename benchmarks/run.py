"""Run the mailproxy_core benchmarks and print each figure beside its baseline.

Usage: ``python benchmarks/run.py [--quick] [--json]``. Progress goes to
standard error, so that with ``--json`` standard output is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable

from report import Figure, to_json, to_table

_TWISTED_MISSING = (
    "twisted is not installed, but the login figure compares with it; "
    "install the bench extra with: pip install -e '.[bench]'"
)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """Return the parsed command line.

    :param argv: the arguments after the program name, or ``None`` for
        :data:`sys.argv`.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="do less work (under about 20 s), with 100,000 instead of "
        "1,000,000 connections in the session-limit figure",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object instead of a table",
    )
    return parser.parse_args(argv)


def run_all(quick: bool) -> list[Figure]:
    """Run every benchmark and return their figures in order.

    :param quick: use the short plans of ``--quick``.
    """
    # Imported here, so that a missing Twisted is reported before
    # login.py fails to import it.
    import limit
    import login
    import relay

    runners: list[tuple[str, Callable[[bool], list[Figure]]]] = [
        ("relay", relay.run),
        ("login", login.run),
        ("session limit", limit.run),
    ]
    figures: list[Figure] = []
    for name, runner in runners:
        started = time.perf_counter()
        figures.extend(runner(quick))
        elapsed = time.perf_counter() - started
        print(f"{name}: done in {elapsed:.1f} s", file=sys.stderr)
    return figures


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print the figures.

    :param argv: the arguments after the program name, or ``None`` for
        :data:`sys.argv`.
    :returns: the exit status: 0, or 2 when Twisted is missing.
    """
    arguments = parse_arguments(argv)
    if importlib.util.find_spec("twisted") is None:
        print(f"error: {_TWISTED_MISSING}", file=sys.stderr)
        return 2

    figures = run_all(arguments.quick)
    if arguments.json:
        print(to_json(figures, quick=arguments.quick))
    else:
        print(to_table(figures, quick=arguments.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())

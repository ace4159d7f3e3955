"""Figures of a benchmark run, printed as a table or as one JSON object."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """One side of a figure.

    :param label: what was measured, for example ``"core ImapSession"``.
    :param samples: the value of each timed round, in the figure's unit.
    """

    label: str
    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        """The median of the samples."""
        return statistics.median(self.samples)


@dataclass(frozen=True, slots=True, kw_only=True)
class Figure:
    """A measured value beside its baseline from the same run.

    :param name: the figure's key in the JSON output.
    :param title: the figure's row title in the table.
    :param unit: the unit of both values.
    :param subject: the measured side.
    :param baseline: the side that it is compared with.
    :param ratio_of: how the ratio is formed, for example ``"core / bare"``.
    :param note: a caveat printed below the table, or ``""``.
    :param details: further facts of the run for the JSON output.
    """

    name: str
    title: str
    unit: str
    subject: Measurement
    baseline: Measurement
    ratio_of: str
    note: str = ""
    details: tuple[tuple[str, object], ...] = ()

    @property
    def ratio(self) -> float:
        """The subject's median divided by the baseline's median."""
        return self.subject.median / self.baseline.median

    def to_json(self) -> dict[str, object]:
        """Return the figure as a JSON-ready mapping."""
        return {
            "title": self.title,
            "unit": self.unit,
            "subject": _measurement_json(self.subject),
            "baseline": _measurement_json(self.baseline),
            "ratio": self.ratio,
            "ratio_of": self.ratio_of,
            "note": self.note,
            **dict(self.details),
        }


def _measurement_json(measurement: Measurement) -> dict[str, object]:
    return {
        "label": measurement.label,
        "median": measurement.median,
        "samples": list(measurement.samples),
    }


def machine() -> dict[str, object]:
    """Return the interpreter and machine that the run used."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "twisted": _version("twisted"),
    }


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def to_json(figures: list[Figure], *, quick: bool) -> str:
    """Return the whole run as one JSON object.

    :param figures: the figures in the order they ran.
    :param quick: whether the run used ``--quick``.
    """
    document = {
        **machine(),
        "quick": quick,
        "figures": {figure.name: figure.to_json() for figure in figures},
    }
    return json.dumps(document, indent=2)


_HEADINGS = ("figure", "unit", "measured", "value", "baseline", "value", "ratio")


def to_table(figures: list[Figure], *, quick: bool) -> str:
    """Return the run as a short aligned table with notes below it.

    :param figures: the figures in the order they ran.
    :param quick: whether the run used ``--quick``.
    """
    rows = [_HEADINGS, *(_row(figure) for figure in figures)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(_HEADINGS))]
    lines = [_heading(quick)]
    for row in rows:
        lines.append(_align(row, widths))

    notes = [f"note: {figure.note}" for figure in figures if figure.note]
    return "\n".join(lines + notes)


def _heading(quick: bool) -> str:
    info = machine()
    mode = "quick run" if quick else "full run"
    return (
        f"mailproxy_core benchmarks, {mode}: {info['implementation']} "
        f"{info['python']}, Twisted {info['twisted']}, {info['platform']}, "
        f"{info['cpu_count']} CPUs\n"
    )


def _row(figure: Figure) -> tuple[str, ...]:
    return (
        figure.title,
        figure.unit,
        figure.subject.label,
        _number(figure.subject.median),
        figure.baseline.label,
        _number(figure.baseline.median),
        f"{figure.ratio:.3f} ({figure.ratio_of})",
    )


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


def _align(row: tuple[str, ...], widths: list[int]) -> str:
    # Text columns align left and the two value columns align right.
    cells = [
        cell.rjust(width) if column in (3, 5) else cell.ljust(width)
        for column, (cell, width) in enumerate(zip(row, widths, strict=True))
    ]
    return "  ".join(cells).rstrip()

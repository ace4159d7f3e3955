"""Sphinx directive that draws the connection-state diagram from the code.

``.. state-diagram::`` reads :data:`mailproxy_core.states.TRANSITIONS`, so
the documented diagram cannot drift from the table the core enforces.
"""

from __future__ import annotations

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from mailproxy_core.states import TRANSITIONS, ConnectionState, counts_toward_limit


def render_diagram() -> str:
    """Return the transition table as lines of ``old --> new`` arrows."""
    width = max(len(state.value) for state in ConnectionState)
    lines = []
    for old, targets in TRANSITIONS.items():
        if not targets:
            lines.append(f"{old.value:<{width}}      (final)")
        for new in sorted(targets, key=lambda s: list(ConnectionState).index(s)):
            lines.append(f"{old.value:<{width}} --> {new.value}")
    return "\n".join(lines)


class StateDiagram(SphinxDirective):
    """Insert the state diagram and which states count toward the limit."""

    def run(self) -> list[nodes.Node]:
        diagram = nodes.literal_block(render_diagram(), render_diagram())
        counted = ", ".join(s.value for s in ConnectionState if counts_toward_limit(s))
        note = nodes.paragraph(
            text=f"States that count toward the session limit: {counted}."
        )
        return [diagram, note]


def setup(app: Sphinx) -> dict[str, object]:
    """Register the directive with Sphinx."""
    app.add_directive("state-diagram", StateDiagram)
    return {"parallel_read_safe": True}

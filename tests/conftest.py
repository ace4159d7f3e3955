"""Hypothesis profiles for the whole test suite.

``CI=true`` selects the "ci" profile, anything else the "dev" profile, and
``HYPOTHESIS_PROFILE`` overrides both.
"""

from __future__ import annotations

import os

from hypothesis import settings

# The same number of examples as Hypothesis's default. CI drops the
# per-example deadline because a loaded shared machine makes timings noisy,
# and keeps random generation so each run tries new inputs.
settings.register_profile("dev", max_examples=100)
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=False,
    print_blob=True,
)

default_profile = "ci" if os.environ.get("CI") == "true" else "dev"
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", default_profile))

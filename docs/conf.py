"""Sphinx configuration for the mailproxy-core documentation."""

import sys
from importlib.metadata import version as distribution_version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "mailproxy-core"
author = "mailproxy-core developers"
release = distribution_version("mailproxy-core")
version = ".".join(release.split(".")[:2])

# intersphinx stays off because the build machines have no network access.
extensions = ["sphinx.ext.autodoc", "statediagram"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"

exclude_patterns = ["_build"]
nitpicky = False

html_theme = "alabaster"

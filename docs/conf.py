"""Sphinx configuration of the API reference (``sphinx-build -W --keep-going -b html docs DIR``).

The reference is built from the docstrings (reST with ``:param:`` fields) by autodoc; the
Markdown pages next to this file (architecture, conventions, methods) are read on their own.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from pyro_sparse_bnn.core.version import __version__  # noqa: E402

project = "pyro_sparse_bnn"
author = "pyro_sparse_bnn developers"
copyright = "2026, pyro_sparse_bnn developers"
version = release = __version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode"]

exclude_patterns = ["_build", "*.md"]
root_doc = "index"

# Signatures show the annotations as written; with ``from __future__ import annotations`` and
# TYPE_CHECKING-only imports (arviz, pandas, matplotlib) autodoc cannot resolve them, so it
# must not try to evaluate them into the description.
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_preserve_defaults = True
# Methods without a docstring would inherit torch's and Pyro's (e.g. Distribution.expand),
# whose reST is not ours to fix.
autodoc_inherit_docstrings = False
# Cross-references the docstrings make to other libraries (torch, pyro, numpy, ...) are not
# resolved without intersphinx, which needs the network; nitpicky stays off.
nitpicky = False

html_theme = "alabaster"
html_static_path = []
html_title = f"pyro_sparse_bnn {release}"


def _end_field_lists(app, what, name, obj, options, lines):
    """Insert the blank line reST needs between a ``:param:`` field list and a following
    unindented paragraph (a docstring that writes "Other keyword arguments are ..." right
    under its fields): without it docutils warns, and the build treats warnings as errors."""
    in_fields = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(":"):
            in_fields = True
        elif not line.strip():
            in_fields = False
        elif in_fields and not line[0].isspace():
            lines.insert(i, "")
            in_fields = False
        i += 1


def setup(app):
    app.connect("autodoc-process-docstring", _end_field_lists)

"""Files: saving and loading fitted networks, and exporting compressed ones for
deployment. Imports from :mod:`pyro_sparse_bnn.analysis` and :mod:`pyro_sparse_bnn.core`.
"""

from .export import export
from .serialization import load, load_history, load_state, save

__all__ = [
    "export",
    "load",
    "load_history",
    "load_state",
    "save",
]

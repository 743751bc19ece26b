"""Applications built on the library: the model zoo, the command line, the demo, the
data sets and the baselines a compressed network is compared with. Nothing in the library
imports from here.
"""

from .baselines import magnitude_prune, train_from_scratch

__all__ = [
    "magnitude_prune",
    "train_from_scratch",
]

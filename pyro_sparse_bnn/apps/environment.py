"""The environment a measurement ran in, stored with every zoo result and benchmark figure."""

import platform

import torch

__all__ = ["environment"]


def environment() -> dict:
    """Python and torch versions, torch threads and machine, stored with every measurement."""
    return {"python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "machine": platform.machine()}

"""Progress bars that show where someone is watching.

Every long-running function takes ``progress=None``: a bar is drawn when stderr is a
terminal or the code runs in a Jupyter kernel, and left out when output goes to a log file or
a pipe (where tqdm's carriage returns would flood it). ``progress=True`` or ``False`` always
wins.
"""

import sys
from typing import Optional

from tqdm.auto import tqdm

from .validation import check_bool

__all__ = ["show_progress", "progress_bar"]


def _in_notebook() -> bool:
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def show_progress(progress: Optional[bool]) -> bool:
    """Whether to draw a progress bar: ``progress`` if it is a bool, otherwise (``None``) only
    when stderr is an interactive terminal or the code runs in a Jupyter notebook."""
    if progress is not None:
        return check_bool("progress", progress)
    stderr = sys.stderr
    return bool(stderr is not None and hasattr(stderr, "isatty") and stderr.isatty()) or _in_notebook()


def progress_bar(progress: Optional[bool], **kwargs) -> tqdm:
    """A ``tqdm`` bar (``tqdm.auto``: a widget in notebooks) that is disabled unless
    :func:`show_progress` says to draw it; ``kwargs`` go to ``tqdm`` (``total``, ``desc``, ...)."""
    return tqdm(disable=not show_progress(progress), mininterval=0.5, **kwargs)

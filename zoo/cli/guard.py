"""Where every command line meets its errors: bad input prints one line and exits 2, a bug keeps its traceback.

``python -m zoo <command>``, ``python -m zoo train`` (``training/train.py``) and ``python -m zoo
eval`` (``eval/reproduce.py``) run their work through :func:`run_guarded`. What the user can fix
is answered with ``PROG: error: MESSAGE`` on one line and exit status 2, as argparse answers a
bad option:

* the zoo's own errors (:class:`~zoo.errors.ZooError`: unknown names, unreadable or unsafe
  checkpoints, bad configs, recipes and tables, corrupt images, missing data, refused outputs);
* a file system error about a named path (a permission, a missing file, a full disk);
* a missing optional package (an ``ImportError`` of a module outside the zoo);
* a training run whose loss became NaN or infinite (``FloatingPointError``).

Anything else (a ``KeyError``, ``TypeError``, an ``ImportError`` of the zoo itself ...) is a bug
and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Callable

from zoo.errors import ZooError

#: exit status of a command refused for its input (argparse uses it for bad options too)
EXIT_INPUT = 2


def user_error(err: BaseException) -> str | None:
    """The one-line message for an error the user can fix, or None for a bug."""
    if isinstance(err, ZooError):
        # UnknownNameError is also a KeyError, whose str() would quote the message.
        return str(err.args[0]) if err.args else type(err).__name__
    if isinstance(err, FloatingPointError):
        return str(err)
    if isinstance(err, ImportError):
        # A hint raised over the missing module (``raise ImportError("pip install ...") from err``) names it in its cause.
        cause = err.__cause__ if isinstance(err.__cause__, ImportError) else None
        name = err.name or (cause.name if cause is not None else None) or ""
        if not name or name == "zoo" or name.startswith("zoo."):
            return None
        hint = "" if "pip install" in str(err) else \
            " (an optional dependency: install the extra of pyproject.toml that lists it, e.g. retrieval-zoo[eval])"
        return f"{err}{hint}"
    if isinstance(err, OSError) and err.filename is not None:
        target = f"{err.filename}" + (f" -> {err.filename2}" if err.filename2 else "")
        return f"{target}: {err.strerror or err}"
    return None


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    return f"warning: {message}\n"


def run_guarded(work: Callable[[], int], prog: str) -> int:
    """``work()``, with the errors a user can fix turned into ``PROG: error: MESSAGE`` and exit status 2.

    Warnings (e.g. an unpinned weights file) print as one ``warning:`` line, not with a source line.
    """
    warnings.formatwarning = _one_line_warning
    try:
        return work()
    except Exception as err:
        message = user_error(err)
        if message is None:
            raise
        rank = os.environ.get("RANK")
        where = f" (rank {rank})" if rank and os.environ.get("WORLD_SIZE", "1") != "1" else ""
        print(f"{prog}: error{where}: {' '.join(message.split())}", file=sys.stderr)
        return EXIT_INPUT

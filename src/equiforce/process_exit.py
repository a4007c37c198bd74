"""End a process without its last garbage collection.

At exit Python collects every object it tracks; with torch (and equiforce's models) imported
that final collection walks millions of objects: ~0.4 s for ``import torch`` alone and
~0.7-0.8 s for an ``equiforce`` command or timing worker on this 2-core EPYC VM, against
~0.15 s with the objects frozen first (``gc.freeze``), every time a command, a benchmark
worker or a ``torchrun`` rank ends. ``exit_process`` freezes them and exits: ``atexit``
handlers, ``weakref.finalize`` callbacks, stream flushes and module teardown still run; only
reference cycles among the frozen objects are left to the operating system, as at any exit.
"""

from __future__ import annotations

import gc
import sys
from typing import NoReturn

__all__ = ["exit_process"]


def exit_process(status: int | None) -> NoReturn:
    """``sys.exit(status)`` without the final garbage collection (module docstring).

    Only for a process's last statement (``if __name__ == "__main__":`` or a console script):
    in a process that goes on, the cycles among the frozen objects would never be collected.
    """
    gc.freeze()
    sys.exit(status)

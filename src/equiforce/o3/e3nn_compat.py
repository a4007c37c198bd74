"""The one place equiforce imports e3nn, so that e3nn 0.4.4 and 0.6 both load.

e3nn 0.4.4 reads its constants with ``torch.load`` at import time; since torch 2.6 that
load is ``weights_only`` and rejects the pickled builtin ``slice``. Allowing ``slice`` for
the duration of the import fixes it without touching global state (mace-torch instead sets
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the whole process).

Only APIs with identical behaviour in both versions are used: ``Irreps``/``Irrep`` and
``spherical_harmonics``; ``wigner_3j`` only through ``equiforce.o3.wigner``, which fixes
the sign that differs between versions.
"""

from __future__ import annotations

import torch

with torch.serialization.safe_globals([slice]):
    from e3nn import o3 as e3nn_o3

__all__ = ["e3nn_o3"]

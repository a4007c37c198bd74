"""torch's default dtype, set for a peer's code and restored after it (mace-torch builds its
coupling buffers and reads its inputs in the default dtype; nequip's global state sets it)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["default_dtype"]


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype | None = None) -> Iterator[None]:
    """Within the block torch's default dtype is ``dtype`` (None: unchanged, whatever the
    block sets); the previous default is restored on exit, also after an exception."""
    previous = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)

"""``use_backend``: move every executor of a model to another kernel backend.

Modules that are not executors but call the kernel library's operators directly (Allegro's
MLPs, tensor track and edge geometry; ``equiforce.nn.allegro``) carry a boolean
``kernel_library`` (True when built): ``use_backend`` sets it False for the ``reference``
backend, so a reference model runs torch operations only and never builds the library, and
True for the others.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from equiforce.kernels.registry import (
    CONSTRUCTOR_ARGS,
    executor_key,
    make_executor,
    resolve_backend,
)

__all__ = ["KEEP", "use_backend"]

KEEP: Any = object()  # ``use_backend(..., math_dtype=KEEP)``: keep each executor's math dtype


def _placement(module: nn.Module, default: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of an executor's tensors (``default``'s if it has none)."""
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return default.device, default.dtype


def _layout(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def use_backend(model: nn.Module, backend: str, math_dtype: Any = KEEP) -> nn.Module:
    """Replace every executor submodule of ``model`` by ``backend``'s, in place.

    Values are copied; device and dtype of each executor are kept. Kinds ``backend`` does
    not implement fall back as in ``executor_class``. Modules carrying ``kernel_library``
    (module docstring) use the library unless ``backend`` is ``"reference"``.

    Args:
        model: any module containing executors (a ``Potential``, a block, an executor's
            parent).
        backend: ``"auto"``, ``"reference"``, ``"fast"`` or ``"cueq"``.
        math_dtype: contraction dtype of the new executors (None: parameter dtype);
            ``KEEP`` (default) keeps each executor's.

    Returns:
        ``model`` itself.

    Raises:
        RuntimeError: the state-dict keys or shapes changed (a backend broke the layout).
    """
    before = _layout(model)
    anchor = next(
        (t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()),
        torch.zeros((), dtype=torch.float64),
    )
    generator = torch.Generator().manual_seed(0)  # initial values are overwritten below
    library = resolve_backend(backend) != "reference"
    for parent in list(model.modules()):
        if hasattr(parent, "kernel_library"):
            parent.kernel_library = library
        for name, child in list(parent.named_children()):
            key = executor_key(child)
            if key is None:
                continue
            kind = key[0]
            dtype_math = child.math_dtype if math_dtype is KEEP else math_dtype
            # the constructor arguments from the attributes of the same name (registry)
            arguments = {
                name: generator if name == "generator" else getattr(child, name)
                for name in CONSTRUCTOR_ARGS[kind]
            }
            new = make_executor(kind, backend, dtype_math, **arguments)
            device, dtype = _placement(child, anchor)
            new = new.to(device=device, dtype=dtype)
            if _layout(new) != _layout(child):
                raise RuntimeError(
                    f"{type(new).__name__} changes the state-dict layout of {name!r}: "
                    f"{_layout(child)} -> {_layout(new)}"
                )
            new.load_state_dict(child.state_dict())
            for new_param, old_param in zip(new.parameters(), child.parameters(), strict=True):
                new_param.requires_grad_(old_param.requires_grad)
            new.train(child.training)
            setattr(parent, name, new)
    if _layout(model) != before:
        raise RuntimeError(f"use_backend({backend!r}) changed the model's state-dict layout")
    return model

"""Applying a ``PrecisionPolicy`` to a model: data the blocks carry, plus a scope for the run.

Every block that can run in low precision declares its op class (``OP_CLASSES``) as a class
attribute ``op_class`` and carries a compute dtype ``math_dtype`` (None: its parameter dtype):
the kernel executors (``linear``, ``tensor_product``; ``equiforce.kernels``) and the scalar
MLPs (``mlp``; ``equiforce.nn``). A block computes in its ``math_dtype`` with explicit casts
and returns its input dtype (float32), so every sum between blocks (messages over
neighbours, energies over layers) accumulates in float32, and matmuls inside a block take
bf16/fp16 inputs with float32 accumulation (oneDNN on CPU, tensor cores on GPU).

``apply_policy(model, policy)`` casts the parameters to the policy's dtype, walks the modules
and sets the ``math_dtype`` of each declared block: the policy's bf16/fp16 when the block's op
class is in ``policy.autocast_ops``, None otherwise. Nothing else is installed (no hooks, no
autocast), so the model traces and exports like any other; state-dict keys are unchanged, so
checkpoints and model files stay interchangeable between modes, and applying another policy
replaces the previous one.

``matmul`` (tf32) is the process-wide float32 matmul precision: the entry points that run a
model (training run, ``evaluate``, the ASE calculator, the bench worker, the precision audit)
enter ``precision_scope(policy)`` around their run or call; the model itself never sets it.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from equiforce.precision.policy import OP_CLASSES, PrecisionPolicy

__all__ = ["apply_policy", "current_policy", "op_class", "precision_scope"]

_POLICY_ATTR = "_precision_policy"


def op_class(module: nn.Module) -> str | None:
    """The op class (``OP_CLASSES``) ``module``'s class declares, or None if it declares none.

    Raises:
        ValueError: a declaration outside ``OP_CLASSES``.
    """
    kind = getattr(type(module), "op_class", None)
    if kind is not None and kind not in OP_CLASSES:
        raise ValueError(
            f"{type(module).__name__} declares op class {kind!r}; known: {list(OP_CLASSES)}"
        )
    return kind


def current_policy(model: nn.Module) -> PrecisionPolicy | None:
    """The policy last applied by ``apply_policy`` to ``model`` or a module inside it, or None.

    A wrapper (``CompiledPotential``) thus reports the policy of the potential it wraps.
    """
    carriers = (m for m in model.modules() if hasattr(m, _POLICY_ATTR))
    return next((getattr(m, _POLICY_ATTR) for m in carriers), None)


def apply_policy(model: nn.Module, policy: PrecisionPolicy) -> nn.Module:
    """Cast ``model`` to ``policy.model_dtype`` and set its blocks' compute dtypes, in place.

    Args:
        model: usually a ``Potential``; any module works.
        policy: the precision policy; replaces any policy applied before.

    Returns:
        ``model`` itself (for chaining).

    Raises:
        ValueError: a block declares an op class but carries no ``math_dtype``.
    """
    blocks = [(n, m) for n, m in model.named_modules() if op_class(m) is not None]
    for name, module in blocks:
        if not hasattr(module, "math_dtype"):
            raise ValueError(
                f"{name}: {type(module).__name__} declares op class {op_class(module)!r} "
                "but carries no math_dtype, so it cannot run in another compute dtype"
            )
    model.to(policy.torch_dtype)
    for _, module in blocks:
        chosen = op_class(module) in policy.autocast_ops
        module.math_dtype = policy.autocast_dtype if chosen else None
    setattr(model, _POLICY_ATTR, policy)
    return model


@contextlib.contextmanager
def precision_scope(policy: PrecisionPolicy | None) -> Iterator[None]:
    """Run a block (a training run, an evaluation, a calculator call) in the policy's matmuls.

    The process-wide ``torch.get_float32_matmul_precision()`` is set on entry only when the
    policy asks for tf32, and restored on exit. Nests.
    """
    if policy is None or policy.matmul == "highest":
        yield
        return
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(policy.float32_matmul_precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved)

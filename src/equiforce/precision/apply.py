"""Applying a ``PrecisionPolicy`` to a model: a transform, plus a scope for code around it.

``apply_policy(model, policy)`` casts the parameters to the policy's dtype and registers
forward hooks, so the policy travels with the model into the trainer, ``evaluate``, the ASE
calculator and MD without further plumbing; state-dict keys are unchanged, so checkpoints and
model files stay interchangeable between modes, and applying another policy replaces the
previous one.

* Kernel executors (``linear``, ``tensor_product``) of a class in ``policy.autocast_ops`` get
  their ``math_dtype`` set to bf16/fp16 (``equiforce.kernels``): the contraction runs in it
  and the output comes back in the input dtype (float32). A linear executor without a
  ``math_dtype`` gets an autocast region instead (below); a tensor-product executor without
  one is refused, because an autocast would leave its scatter-sum in a dtype mismatch.
* Other modules of a chosen class (``mlp``) run under ``torch.autocast(device, bf16|fp16)``;
  their floating outputs are cast back to the dtype of their first input (float32).
  Either way every sum between these regions (messages, energies) accumulates in float32,
  and matmuls inside take low-precision inputs with float32 accumulation (oneDNN on CPU,
  tensor cores on GPU).
* ``matmul`` (tf32): the root module's forward (which includes the autograd forces) runs with
  ``torch.set_float32_matmul_precision``; code that backpropagates outside the forward (a
  training step) wraps itself in ``precision_scope(policy)``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

from equiforce.nn.allegro.mlp import AllegroMLP
from equiforce.nn.mace.mlp import RadialMLP
from equiforce.o3.allegro_tp import AllegroTPDescriptor
from equiforce.o3.descriptors import ChannelwiseTPDescriptor, LinearDescriptor
from equiforce.o3.symmetric import SymmetricContractionDescriptor
from equiforce.precision.policy import PrecisionPolicy

__all__ = ["apply_policy", "current_policy", "op_class", "precision_scope"]

_TP_DESCRIPTORS = (ChannelwiseTPDescriptor, SymmetricContractionDescriptor, AllegroTPDescriptor)
_EXECUTOR_CLASSES = ("linear", "tensor_product")  # kernel executors (may have a math_dtype)
_POLICY_ATTR = "_precision_policy"


def op_class(module: nn.Module) -> str | None:
    """The ``OP_CLASSES`` entry a submodule belongs to, or None.

    Kernel executors are recognised by their descriptor (any backend keeps a ``descriptor``
    attribute), MLPs by class.
    """
    descriptor = getattr(module, "descriptor", None)
    if isinstance(descriptor, LinearDescriptor):
        return "linear"
    if isinstance(descriptor, _TP_DESCRIPTORS):
        return "tensor_product"
    if isinstance(module, (RadialMLP, AllegroMLP)):
        return "mlp"
    return None


def current_policy(model: nn.Module) -> PrecisionPolicy | None:
    """The policy last applied to ``model`` by ``apply_policy``, or None."""
    return getattr(model, _POLICY_ATTR, None)


def apply_policy(model: nn.Module, policy: PrecisionPolicy) -> nn.Module:
    """Cast ``model`` to ``policy.model_dtype`` and install the policy's hooks, in place.

    Args:
        model: usually a ``Potential``; any module works.
        policy: the precision policy; replaces any policy applied before.

    Returns:
        ``model`` itself (for chaining).

    Raises:
        ValueError: ``tensor_product`` autocast with an executor that has no ``math_dtype``.
    """
    _remove_hooks(model)
    model.to(policy.torch_dtype)
    chosen = [
        (name, module, op_class(module))
        for name, module in model.named_modules()
        if op_class(module) in policy.autocast_ops
    ]
    for name, module, kind in chosen:
        if kind == "tensor_product" and not hasattr(module, "math_dtype"):
            raise ValueError(
                f"{name}: the {type(module).__name__} executor has no math_dtype, so "
                f"tensor products cannot run in {policy.autocast}; choose a kernel backend "
                "that supports it or leave tensor_product out of autocast_ops"
            )
    for module in model.modules():
        if op_class(module) in _EXECUTOR_CLASSES and hasattr(module, "math_dtype"):
            module.math_dtype = None  # back to the parameter dtype
    if policy.matmul != "highest":
        saved: list[str] = []
        model.register_forward_pre_hook(_MatmulEnter(policy, saved))
        model.register_forward_hook(_MatmulExit(saved), always_call=True)
    for _, module, kind in chosen:
        if kind in _EXECUTOR_CLASSES and hasattr(module, "math_dtype"):
            module.math_dtype = policy.autocast_dtype
        else:
            stack: list[Any] = []
            module.register_forward_pre_hook(_AutocastEnter(policy, stack))
            module.register_forward_hook(_AutocastExit(stack), always_call=True)
    object.__setattr__(model, _POLICY_ATTR, policy)
    return model


@contextlib.contextmanager
def precision_scope(policy: PrecisionPolicy | None) -> Iterator[None]:
    """Run a block (e.g. a training step's backward) with the policy's matmul precision.

    The process-wide ``torch.get_float32_matmul_precision()`` is restored on exit.
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


def _remove_hooks(model: nn.Module) -> None:
    """Drop the hooks of a previously applied policy (found by type, so copies work too)."""
    for module in model.modules():
        for hooks in (module._forward_pre_hooks, module._forward_hooks):
            for key in [k for k, h in hooks.items() if isinstance(h, _HOOK_TYPES)]:
                del hooks[key]
                module._forward_hooks_always_called.pop(key, None)


def _first_tensor(args: tuple[Any, ...]) -> torch.Tensor | None:
    return next((a for a in args if isinstance(a, torch.Tensor)), None)


class _AutocastEnter:
    """Forward pre-hook: enter ``torch.autocast`` on the device of the first input tensor."""

    def __init__(self, policy: PrecisionPolicy, stack: list[Any]):
        self.dtype = policy.autocast_dtype
        self.stack = stack

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        first = _first_tensor(args)
        device = "cpu" if first is None else first.device.type
        context = torch.autocast(device_type=device, dtype=self.dtype)
        context.__enter__()
        self.stack.append((context, None if first is None else first.dtype))


class _AutocastExit:
    """Forward hook: leave the autocast and cast half-precision outputs to the input dtype."""

    def __init__(self, stack: list[Any]):
        self.stack = stack

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        context, dtype = self.stack.pop()
        context.__exit__(None, None, None)
        if dtype is None:
            return output
        return _cast_half(output, dtype)


def _cast_half(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor):
        if value.dtype in (torch.bfloat16, torch.float16):
            return value.to(dtype)
        return value
    if isinstance(value, tuple):
        return tuple(_cast_half(v, dtype) for v in value)
    return value


class _MatmulEnter:
    """Forward pre-hook of the root module: set the float32 matmul precision."""

    def __init__(self, policy: PrecisionPolicy, saved: list[str]):
        self.precision = policy.float32_matmul_precision
        self.saved = saved

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.saved.append(torch.get_float32_matmul_precision())
        torch.set_float32_matmul_precision(self.precision)


class _MatmulExit:
    """Forward hook of the root module: restore the float32 matmul precision."""

    def __init__(self, saved: list[str]):
        self.saved = saved

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        torch.set_float32_matmul_precision(self.saved.pop())


_HOOK_TYPES = (_AutocastEnter, _AutocastExit, _MatmulEnter, _MatmulExit)

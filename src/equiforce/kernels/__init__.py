"""Executors for the ``equiforce.o3`` descriptors, chosen by backend name.

``make_executor(kind, backend="auto", math_dtype=None, **arguments)`` (and its typed
shorthands ``make_*(descriptor, ..., backend="auto", math_dtype=None)``; the arguments of each
kind are ``registry.CONSTRUCTOR_ARGS``) is the single place a backend is chosen; all backends
of a descriptor share parameter names, shapes and layout, and ``use_backend(model, name)``
moves a built model to another backend. Backends:

* ``reference``: plain PyTorch, readable, the ground truth (``reference``,
  ``allegro_reference``);
* ``fast``: fused PyTorch / C++ kernels for CPU and GPU;
* ``cueq``: NVIDIA cuEquivariance for the edge convolution (fused CUDA kernel; its plain-torch
  method elsewhere), optional dependency ``equiforce[cueq]``;
* ``auto``: ``cueq`` when CUDA and cuequivariance-torch are available, else ``fast``.

A backend that does not implement a kind falls back (``cueq`` -> ``fast`` -> ``reference``);
see ``equiforce.kernels.registry``.
"""

from __future__ import annotations

import torch
from torch import nn

from equiforce.kernels import (
    allegro_fast,
    allegro_reference,
    cueq,
    fast_linear,
    fast_symmetric,
    fast_tp,
    reference,
)
from equiforce.kernels.registry import (
    BACKENDS,
    CONSTRUCTOR_ARGS,
    cueq_available,
    executor_class,
    executor_key,
    make_executor,
    register_executor,
    resolve_backend,
)
from equiforce.kernels.transform import KEEP, use_backend
from equiforce.o3.allegro_tp import AllegroTPDescriptor
from equiforce.o3.descriptors import ChannelwiseTPDescriptor, LinearDescriptor
from equiforce.o3.symmetric import SymmetricContractionDescriptor

__all__ = [
    "BACKENDS",
    "CONSTRUCTOR_ARGS",
    "KEEP",
    "cueq_available",
    "executor_class",
    "executor_key",
    "make_allegro_tp",
    "make_channelwise_tp",
    "make_executor",
    "make_linear",
    "make_symmetric_contraction",
    "register_executor",
    "resolve_backend",
    "use_backend",
]

register_executor("linear", "reference", reference.Linear)
register_executor("channelwise_tp", "reference", reference.ChannelwiseTensorProduct)
register_executor("symmetric_contraction", "reference", reference.SymmetricContraction)
register_executor("allegro_tp", "reference", allegro_reference.AllegroTensorProduct)
register_executor("allegro_tp", "fast", allegro_fast.FastAllegroTensorProduct)
register_executor("linear", "fast", fast_linear.FastLinear)
register_executor("channelwise_tp", "fast", fast_tp.FastChannelwiseTensorProduct)
register_executor("symmetric_contraction", "fast", fast_symmetric.FastSymmetricContraction)
register_executor("channelwise_tp", "cueq", cueq.CueqChannelwiseTensorProduct)


def make_linear(
    descriptor: LinearDescriptor,
    generator: torch.Generator,
    backend: str = "auto",
    math_dtype: torch.dtype | None = None,
) -> nn.Module:
    """Equivariant linear map (``make_executor("linear", ...)``; see ``reference.Linear``)."""
    return make_executor("linear", backend, math_dtype, descriptor=descriptor, generator=generator)


def make_channelwise_tp(
    descriptor: ChannelwiseTPDescriptor,
    backend: str = "auto",
    math_dtype: torch.dtype | None = None,
) -> nn.Module:
    """Gather -> tensor product -> scatter edge convolution (``make_executor``)."""
    return make_executor("channelwise_tp", backend, math_dtype, descriptor=descriptor)


def make_symmetric_contraction(
    descriptor: SymmetricContractionDescriptor,
    n_types: int,
    generator: torch.Generator,
    backend: str = "auto",
    math_dtype: torch.dtype | None = None,
) -> nn.Module:
    """MACE's symmetric contraction (``make_executor``; see ``reference.SymmetricContraction``)."""
    return make_executor(
        "symmetric_contraction",
        backend,
        math_dtype,
        descriptor=descriptor,
        n_types=n_types,
        generator=generator,
    )


def make_allegro_tp(
    descriptor: AllegroTPDescriptor,
    generator: torch.Generator,
    backend: str = "auto",
    math_dtype: torch.dtype | None = None,
) -> nn.Module:
    """Allegro's gather + channel-wise tensor product (``make_executor``)."""
    return make_executor(
        "allegro_tp", backend, math_dtype, descriptor=descriptor, generator=generator
    )

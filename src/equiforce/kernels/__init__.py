"""Executors for the ``equiforce.o3`` descriptors; ``reference`` is plain PyTorch.

``make_*(descriptor, ..., backend="reference")`` is the single place a backend is chosen;
all backends of a descriptor share parameter names, shapes and layout.
"""

from __future__ import annotations

import torch
from torch import nn

from equiforce.kernels import allegro_reference, reference
from equiforce.o3.allegro_tp import AllegroTPDescriptor
from equiforce.o3.descriptors import ChannelwiseTPDescriptor, LinearDescriptor
from equiforce.o3.symmetric import SymmetricContractionDescriptor

__all__ = [
    "BACKENDS",
    "make_allegro_tp",
    "make_channelwise_tp",
    "make_linear",
    "make_symmetric_contraction",
]

BACKENDS = ("reference",)


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; available: {list(BACKENDS)}")


def make_linear(
    descriptor: LinearDescriptor, generator: torch.Generator, backend: str = "reference"
) -> nn.Module:
    """Executor of an equivariant linear map (see ``reference.Linear``)."""
    _check_backend(backend)
    return reference.Linear(descriptor, generator)


def make_channelwise_tp(
    descriptor: ChannelwiseTPDescriptor, backend: str = "reference"
) -> nn.Module:
    """Executor of the gather -> tensor product -> scatter edge convolution."""
    _check_backend(backend)
    return reference.ChannelwiseTensorProduct(descriptor)


def make_symmetric_contraction(
    descriptor: SymmetricContractionDescriptor,
    n_types: int,
    generator: torch.Generator,
    backend: str = "reference",
) -> nn.Module:
    """Executor of MACE's symmetric contraction (see ``reference.SymmetricContraction``)."""
    _check_backend(backend)
    return reference.SymmetricContraction(descriptor, n_types, generator)


def make_allegro_tp(
    descriptor: AllegroTPDescriptor, generator: torch.Generator, backend: str = "reference"
) -> nn.Module:
    """Executor of Allegro's gather + channel-wise tensor product."""
    _check_backend(backend)
    return allegro_reference.AllegroTensorProduct(descriptor, generator)

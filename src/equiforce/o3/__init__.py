"""O(3) building blocks without weights.

Irreps helpers, spherical harmonics, Clebsch–Gordan coefficients, radial bases and the
tensor-product descriptors that ``equiforce.kernels`` executes.
"""

from equiforce.o3.descriptors import ChannelwiseTPDescriptor, LinearDescriptor
from equiforce.o3.irreps import (
    Irrep,
    Irreps,
    block_slices,
    hidden_irreps,
    scalar_irreps,
    sh_irreps,
    tp_target_irreps,
)
from equiforce.o3.radial import bessel_basis, polynomial_cutoff
from equiforce.o3.spherical_harmonics import spherical_harmonics
from equiforce.o3.symmetric import SymmetricContractionDescriptor, symmetric_monomials
from equiforce.o3.wigner import wigner_3j, wigner_D

__all__ = [
    "ChannelwiseTPDescriptor",
    "Irrep",
    "Irreps",
    "LinearDescriptor",
    "SymmetricContractionDescriptor",
    "bessel_basis",
    "block_slices",
    "hidden_irreps",
    "polynomial_cutoff",
    "scalar_irreps",
    "sh_irreps",
    "spherical_harmonics",
    "symmetric_monomials",
    "tp_target_irreps",
    "wigner_3j",
    "wigner_D",
]

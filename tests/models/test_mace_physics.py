"""MACE runs the shared physics suite."""

from __future__ import annotations

import dataclasses

import torch

from equiforce.models.registry import build_model
from equiforce.testing.models import tiny_mace
from tests.models.model_suite import ModelTestSuite


class TestMACEPhysics(ModelTestSuite):
    """Symmetry, gradients, stress, batching and model files for a small random MACE."""

    def make_model(self, dtype: torch.dtype):
        return tiny_mace(
            dtype,
            correlation=3,
            avg_num_neighbors=6.0,
            atomic_energies=(-13.6, -1029.8, -2041.3, -1.2, -0.8),
            scale=1.7,
            shift=0.3,
            seed=1,
        )


class TestMACEWithZBLPhysics(TestMACEPhysics):
    """The same with the ZBL pair repulsion (``MACESpec.pair_repulsion``; it acts on the fcc
    Cu/Au cells, whose nearest neighbours sit inside its covalent-radii cutoff)."""

    def make_model(self, dtype: torch.dtype):
        model = super().make_model(dtype)
        return build_model("mace", dataclasses.replace(model.spec, pair_repulsion=True))


class TestMACEWithAgnesiPhysics(TestMACEPhysics):
    """The same with the Agnesi distance transform (``MACESpec.distance_transform``: the
    radial basis of each edge depends on its pair's covalent radii)."""

    def make_model(self, dtype: torch.dtype):
        model = super().make_model(dtype)
        return build_model("mace", dataclasses.replace(model.spec, distance_transform="agnesi"))


class TestMACENonLinearPhysics(TestMACEPhysics):
    """The same with the non-linear residual interactions of mace-torch's MH models
    (``MACESpec.nonlinear_interactions``, the envelope after the MLPs: ``apply_cutoff``
    false), its species embeddings, density normalisation and gate randomised away from
    their start (alpha 20, beta 0, embeddings ~1e-3)."""

    def make_model(self, dtype: torch.dtype):
        model = super().make_model(dtype)
        spec = dataclasses.replace(model.spec, nonlinear_interactions="all", apply_cutoff=False)
        model = build_model("mace", spec)
        generator = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "embedding" in name or "alpha" in name or "beta" in name:
                    noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
                    parameter.add_(noise.to(parameter.dtype))
        return model


class TestMACEDensityPhysics(TestMACEPhysics):
    """The same with density-normalised interactions (``MACESpec.density_normalization``,
    MACE-MPA-0's blocks: each message over ``1 + sum_j tanh(d(r_ij)^2)``), the first one
    plain, the envelope after the MLPs."""

    def make_model(self, dtype: torch.dtype):
        model = super().make_model(dtype)
        spec = dataclasses.replace(
            model.spec,
            density_normalization=True,
            first_interaction_residual=False,
            apply_cutoff=False,
        )
        return build_model("mace", spec)


class TestMACEEdgeIrrepsPhysics(TestMACEPhysics):
    """The same with ``MACESpec.edge_irreps`` (the up-projection and convolution on 12
    channels up to l = 2 for 8-channel l <= 1 features, the first layer on 12 scalars:
    ``edge_irreps_first``)."""

    def make_model(self, dtype: torch.dtype):
        model = super().make_model(dtype)
        spec = dataclasses.replace(
            model.spec, edge_irreps="12x0e + 12x1o + 12x2e", edge_irreps_first=True
        )
        return build_model("mace", spec)

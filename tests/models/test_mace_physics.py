"""MACE runs the shared physics suite."""

from __future__ import annotations

import torch

from equiforce.models import build_model
from equiforce.models.mace import MACESpec
from tests.models.model_suite import ModelTestSuite


class TestMACEPhysics(ModelTestSuite):
    """Symmetry, gradients, stress, batching and model files for a small random MACE."""

    def make_model(self, dtype: torch.dtype):
        spec = MACESpec(
            type_names=("H", "C", "O", "Cu", "Au"),
            r_max=4.0,
            num_channels=8,
            max_L=1,
            max_ell=2,
            correlation=3,
            num_interactions=2,
            num_radial_basis=6,
            radial_mlp=(16, 16),
            avg_num_neighbors=6.0,
            atomic_energies=(-13.6, -1029.8, -2041.3, -1.2, -0.8),
            scale=1.7,
            shift=0.3,
            dtype=str(dtype).replace("torch.", ""),
            seed=1,
        )
        return build_model("mace", spec)

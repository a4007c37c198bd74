"""Allegro runs the shared physics suite."""

from __future__ import annotations

import dataclasses

import torch

from equiforce.models.registry import build_model
from equiforce.testing.models import tiny_allegro
from tests.models.model_suite import ModelTestSuite


class TestAllegroPhysics(ModelTestSuite):
    """Symmetry, gradients, stress, batching and model files for a small random Allegro."""

    def make_model(self, dtype: torch.dtype):
        """A tiny random Allegro in `dtype`."""
        return tiny_allegro(
            dtype,
            avg_num_neighbors=6.0,
            atomic_energies=(-13.6, -1029.8, -2041.3, -1.2, -0.8),
            scale=1.7,
            shift=0.3,
            seed=1,
        )


class TestAllegroPhysicsNoParityLmax2(ModelTestSuite):
    """The same suite for l_max 2 without parity, one layer, per-type scales."""

    def make_model(self, dtype: torch.dtype):
        """A tiny random Allegro in `dtype`."""
        return tiny_allegro(
            dtype,
            l_max=2,
            parity=False,
            num_layers=1,
            avg_num_neighbors=5.0,
            type_scales=(1.0, 0.5, 2.0, 1.5, 0.7),
            seed=2,
        )


class TestAllegroWithZBLPhysics(TestAllegroPhysics):
    """The same with the ZBL pair repulsion (``AllegroSpec.pair_repulsion``; it acts on the
    fcc Cu/Au cells, whose nearest neighbours sit inside its covalent-radii cutoff): still
    strictly local (the contract checks it)."""

    def make_model(self, dtype: torch.dtype):
        model = super().make_model(dtype)
        return build_model("allegro", dataclasses.replace(model.spec, pair_repulsion=True))

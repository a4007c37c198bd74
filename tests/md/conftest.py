"""Fixtures for the calculator and MD tests: a tiny random MACE and its model file."""

from __future__ import annotations

import pytest
import torch

from equiforce.models import Potential, build_model, save_model
from equiforce.models.mace import MACESpec

TYPE_NAMES = ("H", "C", "O", "Cu", "Au")


def tiny_mace(dtype: torch.dtype = torch.float64) -> Potential:
    """A tiny random MACE (8 channels, max_L 1, two layers) over H, C, O, Cu and Au."""
    spec = MACESpec(
        type_names=TYPE_NAMES,
        r_max=4.0,
        num_channels=8,
        max_L=1,
        max_ell=2,
        correlation=2,
        num_interactions=2,
        num_radial_basis=6,
        radial_mlp=(16, 16),
        dtype=str(dtype).replace("torch.", ""),
        seed=11,
    )
    return build_model("mace", spec)


@pytest.fixture(scope="module")
def model64() -> Potential:
    """Tiny float64 MACE."""
    return tiny_mace(torch.float64)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, model64) -> str:
    """``model64`` saved with ``save_model``."""
    path = tmp_path_factory.mktemp("model") / "tiny_mace.pt"
    save_model(model64, path)
    return str(path)

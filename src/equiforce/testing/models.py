"""Small random models for tests (fixed seeds)."""

from __future__ import annotations

from typing import Any

import torch

from equiforce.models import Potential, build_model
from equiforce.models.allegro import AllegroSpec
from equiforce.models.mace import MACESpec

TEST_TYPE_NAMES = ("H", "C", "O", "Cu", "Au")


def tiny_mace(dtype: torch.dtype = torch.float64, **overrides: Any) -> Potential:
    """A tiny random MACE (8 channels, max_L 1, two layers) over H, C, O, Cu and Au.

    Args:
        dtype: parameter dtype.
        **overrides: ``MACESpec`` fields to change (e.g. ``correlation=3``, ``scale=1.7``).
    """
    settings: dict[str, Any] = {
        "type_names": TEST_TYPE_NAMES,
        "r_max": 4.0,
        "num_channels": 8,
        "max_L": 1,
        "max_ell": 2,
        "correlation": 2,
        "num_interactions": 2,
        "num_radial_basis": 6,
        "radial_mlp": (16, 16),
        "seed": 11,
        **overrides,
    }
    settings["dtype"] = str(dtype).replace("torch.", "")
    return build_model("mace", MACESpec(**settings))


def tiny_allegro(dtype: torch.dtype = torch.float64, **overrides: Any) -> Potential:
    """A tiny random Allegro (l_max 1, two layers, 8 tensor features) over H, C, O, Cu, Au.

    Args:
        dtype: parameter dtype.
        **overrides: ``AllegroSpec`` fields to change (e.g. ``l_max=2``, ``scale=1.7``).
    """
    settings: dict[str, Any] = {
        "type_names": TEST_TYPE_NAMES,
        "r_max": 4.0,
        "l_max": 1,
        "num_layers": 2,
        "num_scalar_features": 16,
        "num_tensor_features": 8,
        "two_body_mlp_hidden": (16,),
        "latent_mlp_hidden": (16,),
        "readout_mlp_hidden": (8,),
        "num_bessels": 6,
        "seed": 11,
        **overrides,
    }
    settings["dtype"] = str(dtype).replace("torch.", "")
    return build_model("allegro", AllegroSpec(**settings))

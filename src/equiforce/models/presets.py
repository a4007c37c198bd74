"""The one catalogue of named models (random weights from a seed): ``equiforce bench --preset``,
the benchmark scripts and the tests build their models from it.

Every preset covers H, C and O (the benchmark systems' species), r_max 5 Å, with fixed
dataset constants so that energies stay O(1) eV per atom in float32; the ``-al`` presets (the
scaling models) cover H, O and Al instead, for the fcc aluminium boxes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from equiforce.models import Potential, build_model
from equiforce.models.registry import family

__all__ = ["PRESETS", "preset_potential", "with_dtype"]

_COMMON: dict[str, Any] = {
    "type_names": ("H", "C", "O"),
    "r_max": 5.0,
    "atomic_energies": (-1.0, -2.0, -3.0),
    "avg_num_neighbors": 20.0,
}
_MACE: dict[str, Any] = {
    "max_L": 1,
    "max_ell": 3,
    "correlation": 3,
    "num_interactions": 2,
    "num_radial_basis": 8,
    "radial_mlp": (64, 64, 64),
    "scale": 0.7,
    "shift": -0.1,
}
_ALLEGRO: dict[str, Any] = {
    "l_max": 2,
    "parity": True,
    "num_layers": 2,
    "two_body_mlp_hidden": (64,),
    "latent_mlp_hidden": (64,),
    "readout_mlp_hidden": (32,),
    "num_bessels": 8,
    "polynomial_cutoff_p": 6,
    "scale": 0.5,
}
_TINY_ALLEGRO: dict[str, Any] = {
    **_ALLEGRO,
    "l_max": 1,
    "num_layers": 1,
    "num_scalar_features": 32,
    "num_tensor_features": 8,
    "two_body_mlp_hidden": (32,),
    "latent_mlp_hidden": (32,),
    "readout_mlp_hidden": (16,),
}
_AL: dict[str, Any] = {"type_names": ("H", "O", "Al"), "atomic_energies": (-1.0, -3.0, -2.0)}

# name -> (family, spec fields, one-line description)
PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "mace-128-l1": (
        "mace",
        {**_COMMON, **_MACE, "num_channels": 128},
        "MACE 128x0e+128x1o, correlation 3, 2 interactions, max_ell 3, radial MLP [64,64,64]",
    ),
    "mace-128-l1-mh": (
        "mace",
        {
            **_COMMON,
            **_MACE,
            "num_channels": 128,
            "nonlinear_interactions": "all",
            "apply_cutoff": False,
        },
        "mace-128-l1 with mace-torch's non-linear residual interactions (its MH foundation "
        "models' block) in both layers, the envelope after the radial MLPs",
    ),
    "mace-128-l1-mpa": (
        "mace",
        {
            **_COMMON,
            **_MACE,
            "num_channels": 128,
            "density_normalization": True,
            "first_interaction_residual": False,
            "pair_repulsion": True,
        },
        "mace-128-l1 with MACE-MPA-0's blocks: density-normalised interactions (the first one "
        "plain) and ZBL (not its Agnesi transform: with random weights the two give energies "
        "of ~1e3 eV per atom)",
    ),
    "mace-small": (
        "mace",
        {**_COMMON, **_MACE, "num_channels": 32},
        "MACE 32x0e+32x1o, otherwise as mace-128-l1 (AcAc training and precision runs; the "
        "distillation students change its channels and max_L)",
    ),
    "allegro-big": (
        "allegro",
        {**_COMMON, **_ALLEGRO, "num_scalar_features": 128, "num_tensor_features": 64},
        "Allegro l_max 2, 2 layers, 128 scalar / 64 tensor features",
    ),
    "allegro-small": (
        "allegro",
        {**_COMMON, **_ALLEGRO, "num_scalar_features": 64, "num_tensor_features": 32},
        "Allegro l_max 2, 2 layers, 64 scalar / 32 tensor features",
    ),
    "allegro-tiny": (
        "allegro",
        {**_COMMON, **_TINY_ALLEGRO},
        "Allegro l_max 1, 1 layer, 32 scalar / 8 tensor features, MLP hidden 32 / 32 / 16",
    ),
    # The AcAc training benchmarks (benchmarks/acac_train, precision_acac, distill_acac; the
    # training scripts drop the dataset constants and fit them to the training set).
    "allegro-l1": (
        "allegro",
        {**_COMMON, **_ALLEGRO, "l_max": 1, "num_scalar_features": 64, "num_tensor_features": 16},
        "Allegro l_max 1, 2 layers, 64 scalar / 16 tensor features, MLP hidden 64 / 64 / 32 "
        "(configs/allegro_example.yaml's model; AcAc training vs nequip-allegro)",
    ),
    "allegro-l1-32": (
        "allegro",
        {
            **_COMMON,
            **_ALLEGRO,
            "l_max": 1,
            "num_scalar_features": 32,
            "num_tensor_features": 16,
            "two_body_mlp_hidden": (32,),
            "latent_mlp_hidden": (32,),
            "readout_mlp_hidden": (16,),
        },
        "Allegro l_max 1, 2 layers, 32 scalar / 16 tensor features, MLP hidden 32 / 32 / 16 "
        "(the AcAc precision runs)",
    ),
    "mace-tiny": (
        "mace",
        {**_COMMON, **_MACE, "num_channels": 8, "max_ell": 2, "radial_mlp": (16,)},
        "MACE 8x0e+8x1o, max_ell 2, radial MLP [16] (smoke tests of the training scripts)",
    ),
    # The scaling models: periodic fcc aluminium boxes (bench systems fcc-N) at fixed density.
    "allegro-tiny-al": (
        "allegro",
        {**_COMMON, **_TINY_ALLEGRO, **_AL, "r_max": 4.0, "avg_num_neighbors": 13.0},
        "allegro-tiny on H/O/Al with r_max 4 Å (~13.4 edges per atom in fcc Al): the Allegro "
        "scaling model, 10^6 atoms in ~2.3 GB",
    ),
    "mace-128-l1-al": (
        "mace",
        {**_COMMON, **_MACE, **_AL, "num_channels": 128, "avg_num_neighbors": 43.0},
        "mace-128-l1 on H/O/Al (~35 edges per atom in fcc Al at r_max 5 Å): the MACE scaling "
        "and receiver-chunking model",
    ),
}


def preset_potential(name: str, dtype: str = "float32", seed: int = 0) -> Potential:
    """Build a preset model with random weights.

    Args:
        name: a key of ``PRESETS``.
        dtype: parameter dtype, "float32" or "float64".
        seed: weight seed (the same seed gives the same weights in every process).

    Raises:
        ValueError: unknown preset (the known ones are named).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    family_name, fields, _ = PRESETS[name]
    return build_model(family_name, {**fields, "dtype": dtype, "seed": seed}).eval()


def with_dtype(potential: Potential, dtype: str) -> Potential:
    """``potential`` with parameters (and spec) in ``dtype``; the same object if unchanged.

    Args:
        potential: any model.
        dtype: "float32" or "float64".
    """
    if potential.spec.dtype == dtype:  # the parameters' dtype (``Potential._apply``)
        return potential
    spec = dataclasses.replace(potential.spec, dtype=dtype)
    converted = Potential(family(potential.family).build(spec), potential.family)
    # load_state_dict copies into the new model's tensors, casting to their dtype
    converted.energy_model.load_state_dict(potential.energy_model.state_dict())
    return converted.eval()

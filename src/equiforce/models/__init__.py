"""Model families, the model contract, ``Potential``, and model files."""

from equiforce.models import allegro, mace
from equiforce.models.allegro import AllegroSpec, build_allegro
from equiforce.models.check import ModelContractError, check_declaration, check_model
from equiforce.models.contract import (
    AtomicEnergyModel,
    LayerState,
    PotentialInterface,
    run_layers,
)
from equiforce.models.io import load_model, save_model
from equiforce.models.mace import MACESpec, build_mace
from equiforce.models.potential import Potential
from equiforce.models.registry import MODELS, build_model
from equiforce.models.spec import ModelSpec

__all__ = [
    "AllegroSpec",
    "AtomicEnergyModel",
    "LayerState",
    "MACESpec",
    "MODELS",
    "ModelContractError",
    "ModelSpec",
    "Potential",
    "PotentialInterface",
    "allegro",
    "build_allegro",
    "build_mace",
    "build_model",
    "check_declaration",
    "check_model",
    "load_model",
    "mace",
    "run_layers",
    "save_model",
]

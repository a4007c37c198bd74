"""Model families, the shared ``Potential`` interface, and model files."""

from equiforce.models import allegro, mace
from equiforce.models.allegro import AllegroSpec, build_allegro
from equiforce.models.io import load_model, save_model
from equiforce.models.mace import MACESpec, build_mace
from equiforce.models.potential import Potential
from equiforce.models.registry import MODELS, build_model

__all__ = [
    "AllegroSpec",
    "MACESpec",
    "MODELS",
    "Potential",
    "allegro",
    "build_allegro",
    "build_mace",
    "build_model",
    "load_model",
    "mace",
    "save_model",
]

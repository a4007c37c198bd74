"""Model families, the shared ``Potential`` interface, and model files."""

from equiforce.models.io import load_model, save_model
from equiforce.models.potential import Potential
from equiforce.models.registry import MODELS, build_model

__all__ = ["MODELS", "Potential", "build_model", "load_model", "save_model"]

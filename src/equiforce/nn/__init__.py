"""Blocks: embeddings, radial MLP, interaction, product, readouts, scale-shift."""

from equiforce.nn.embedding import EdgeEmbedding, SpeciesEmbedding
from equiforce.nn.interaction import Interaction, InteractionIrreps
from equiforce.nn.mlp import RadialMLP, ScaledSiLU, normalized_silu_scale
from equiforce.nn.product import Product
from equiforce.nn.readout import LinearReadout, MLPReadout
from equiforce.nn.scale_shift import ScaleShiftEnergy

__all__ = [
    "EdgeEmbedding",
    "Interaction",
    "InteractionIrreps",
    "LinearReadout",
    "MLPReadout",
    "Product",
    "RadialMLP",
    "ScaleShiftEnergy",
    "ScaledSiLU",
    "SpeciesEmbedding",
    "normalized_silu_scale",
]

"""MACE's blocks: embeddings, radial MLP, interaction, product, readouts."""

from equiforce.nn.mace.embedding import EdgeEmbedding, SpeciesEmbedding
from equiforce.nn.mace.interaction import Interaction, InteractionIrreps
from equiforce.nn.mace.mlp import RadialMLP, ScaledSiLU, normalized_silu_scale
from equiforce.nn.mace.product import Product
from equiforce.nn.mace.readout import LinearReadout, MLPReadout

__all__ = [
    "EdgeEmbedding",
    "Interaction",
    "InteractionIrreps",
    "LinearReadout",
    "MLPReadout",
    "Product",
    "RadialMLP",
    "ScaledSiLU",
    "SpeciesEmbedding",
    "normalized_silu_scale",
]

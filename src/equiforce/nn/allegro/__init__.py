"""Allegro's blocks: two-body embedding, the layer stack, scalar MLPs."""

from equiforce.nn.allegro.embedding import AllegroEdgeEmbedding
from equiforce.nn.allegro.layers import AllegroLayers
from equiforce.nn.allegro.mlp import (
    NONLINEARITIES,
    AllegroMLP,
    EdgeMajorWeightedChannels,
    WeightedChannels,
)

__all__ = [
    "NONLINEARITIES",
    "AllegroEdgeEmbedding",
    "AllegroLayers",
    "AllegroMLP",
    "EdgeMajorWeightedChannels",
    "WeightedChannels",
]

"""Field names of the batch dictionary and the scope of every field.

The batch that crosses the model boundary is a plain ``dict[str, Tensor]``. Every key is a
module constant here, with its shape, dtype and unit, and its scope (per node, per edge, per
graph) is declared once in ``FIELD_SCOPES``; batching is generic over that registry.

Edge convention: ``edge_index[0]`` is the centre atom i, ``edge_index[1]`` the neighbour j, and
``edge_vec = pos[j] - pos[i] + edge_shift @ cell`` points from the centre to the neighbour.
"""

from __future__ import annotations

import enum
from types import MappingProxyType
from typing import Mapping


class Scope(enum.Enum):
    """Which entity a field belongs to; decides how batching concatenates it."""

    NODE = "node"
    EDGE = "edge"
    GRAPH = "graph"


# --- per node -----------------------------------------------------------------------------
POSITIONS = "pos"  # (n_atoms, 3) float64, Å
ATOMIC_NUMBERS = "atomic_numbers"  # (n_atoms,) int64
ATOM_TYPE = "atom_type"  # (n_atoms,) int64, index into the model's type_names
FORCES = "forces"  # (n_atoms, 3) float64, eV/Å
BATCH = "batch"  # (n_atoms,) int64, graph index of each atom
NODE_ENERGY = "node_energy"  # (n_atoms,) float64, eV (model output)

# --- per edge -----------------------------------------------------------------------------
EDGE_INDEX = "edge_index"  # (2, n_edges) int64: [centre i, neighbour j]
EDGE_SHIFT = "edge_shift"  # (n_edges, 3) float64, integer lattice shifts of neighbour j
EDGE_VEC = "edge_vec"  # (n_edges, 3) float64, Å, pos[j] - pos[i] + edge_shift @ cell
EDGE_GRADIENT = "edge_gradient"  # (n_edges, 3) float64, eV/Å, dE/d(edge_vec) (model output)

# --- per graph ----------------------------------------------------------------------------
CELL = "cell"  # (n_graphs, 3, 3) float64, Å, rows are lattice vectors (zeros if none)
PBC = "pbc"  # (n_graphs, 3) bool
ENERGY = "energy"  # (n_graphs,) float64, eV, total energy
STRESS = "stress"  # (n_graphs, 3, 3) float64, eV/Å^3, ASE sign (positive = tensile)
VIRIAL = "virial"  # (n_graphs, 3, 3) float64, eV, virial = -stress * volume
N_ATOMS = "n_atoms"  # (n_graphs,) int64
ENERGY_WEIGHT = "energy_weight"  # (n_graphs,) float64, per-config loss weight
FORCES_WEIGHT = "forces_weight"  # (n_graphs,) float64
STRESS_WEIGHT = "stress_weight"  # (n_graphs,) float64
HAS_ENERGY = "has_energy"  # (n_graphs,) bool, label present
HAS_FORCES = "has_forces"  # (n_graphs,) bool
HAS_STRESS = "has_stress"  # (n_graphs,) bool
DATASET_INDEX = "dataset_index"  # (n_graphs,) int64, which training file a graph came from
TOTAL_CHARGE = "total_charge"  # (n_graphs,) float64, elementary charges (0: neutral)
TOTAL_SPIN = "total_spin"  # (n_graphs,) float64, spin multiplicity 2S + 1 (1: singlet)

# --- index fields, not concatenated directly ---------------------------------------------
PTR = "ptr"  # (n_graphs + 1,) int64, first atom of each graph

FIELD_SCOPES: Mapping[str, Scope] = MappingProxyType(
    {
        POSITIONS: Scope.NODE,
        ATOMIC_NUMBERS: Scope.NODE,
        ATOM_TYPE: Scope.NODE,
        FORCES: Scope.NODE,
        NODE_ENERGY: Scope.NODE,
        EDGE_INDEX: Scope.EDGE,
        EDGE_SHIFT: Scope.EDGE,
        EDGE_VEC: Scope.EDGE,
        EDGE_GRADIENT: Scope.EDGE,
        CELL: Scope.GRAPH,
        PBC: Scope.GRAPH,
        ENERGY: Scope.GRAPH,
        STRESS: Scope.GRAPH,
        VIRIAL: Scope.GRAPH,
        N_ATOMS: Scope.GRAPH,
        ENERGY_WEIGHT: Scope.GRAPH,
        FORCES_WEIGHT: Scope.GRAPH,
        STRESS_WEIGHT: Scope.GRAPH,
        HAS_ENERGY: Scope.GRAPH,
        HAS_FORCES: Scope.GRAPH,
        HAS_STRESS: Scope.GRAPH,
        DATASET_INDEX: Scope.GRAPH,
        TOTAL_CHARGE: Scope.GRAPH,
        TOTAL_SPIN: Scope.GRAPH,
    }
)

# Fields a model may read; models copy only these from the caller's dict.
MODEL_INPUT_KEYS = (POSITIONS, ATOM_TYPE, EDGE_INDEX, EDGE_SHIFT, CELL, BATCH, PTR)
# Per-graph electronic state a model may condition on (``AtomicEnergyModel.graph_inputs``);
# a batch carries them always (defaults: neutral singlet), a model reads those it declares.
GRAPH_STATE_KEYS = (TOTAL_CHARGE, TOTAL_SPIN)
GRAPH_STATE_DEFAULTS: Mapping[str, float] = MappingProxyType({TOTAL_CHARGE: 0.0, TOTAL_SPIN: 1.0})

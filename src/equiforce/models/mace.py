"""MACE (Batatia et al., NeurIPS 2022) as mace-torch 0.3.16 builds ``ScaleShiftMACE``.

Defaults follow mace-torch's ``run_train`` for ``--model MACE``: Bessel radial basis with a
polynomial envelope, first interaction ``RealAgnosticInteractionBlock``, later ones
``RealAgnosticResidualInteractionBlock``, symmetric contraction of correlation 3, linear
readouts on every layer but the last, whose readout is an MLP, and
``E_i = E0[type_i] + scale * sum_layers(readout_i) + shift``.

As in mace-torch, the last layer keeps only scalar features, and with a single interaction
its readout is linear. Edge vectors follow mace-torch's direction (sender -> receiver, i.e.
neighbour -> centre, the negative of ``edge_vec``), so weights carry over unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from equiforce.data import keys
from equiforce.models.potential import NODE_FEATURES
from equiforce.models.registry import register
from equiforce.nn import (
    EdgeEmbedding,
    Interaction,
    InteractionIrreps,
    LinearReadout,
    MLPReadout,
    Product,
    ScaleShiftEnergy,
    SpeciesEmbedding,
)
from equiforce.o3.irreps import Irreps, hidden_irreps, scalar_irreps, sh_irreps, tp_target_irreps

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class MACESpec:
    """Every hyperparameter and dataset constant of a MACE model.

    Attributes:
        type_names: chemical symbols, in ``atom_type`` order. Required.
        r_max: cutoff radius, Å (default 5.0). 4-6 Å for most materials and molecules;
            cost grows with r_max^3.
        num_channels: feature channels per irrep (default 64). 32 is a fast start, 128 the
            accurate mace "medium/large" setting; cost grows ~quadratically.
        max_L: highest irrep degree of the hidden features, 0..2 (default 1). 0 is fast
            (invariant messages), 1 the usual trade-off, 2 most accurate.
        max_ell: highest degree of the edge spherical harmonics, 1..4 (default 3).
        correlation: body order minus one of the product basis, 1..3 (default 3).
        num_interactions: message-passing layers (default 2); receptive field is
            ``num_interactions * r_max``.
        num_radial_basis: Bessel functions (default 8); 8-10 is plenty.
        num_polynomial_cutoff: order p of the smooth envelope (default 5).
        radial_mlp: hidden widths of the radial MLP (default (64, 64, 64)).
        readout_mlp_hidden: hidden scalars of the last layer's readout MLP (default 16).
        avg_num_neighbors: message normalisation (default 1.0); set it to the training
            set's mean neighbour count (the trainer does).
        atomic_energies: isolated-atom energy E0 per type, eV (default: zeros); the trainer
            fills them from the data (least squares or given E0s).
        scale: multiplier of the learned per-atom energy, eV (default 1.0); typically the
            force RMS of the training data.
        shift: per-atom energy shift, eV (default 0.0); typically 0 when E0s are used.
        dtype: parameter dtype, "float64" (default; exact forces, MD) or "float32"
            (about 2x faster training).
        seed: seed of the local generator for the initial weights (default 0); building
            never touches the global RNG.
        first_interaction_residual: first interaction uses the residual block
            (mace-torch ``--model ScaleShiftMACE``) instead of the non-residual one
            (default False, ``--model MACE``).
    """

    type_names: tuple[str, ...]
    r_max: float = 5.0
    num_channels: int = 64
    max_L: int = 1  # noqa: N815 (MACE's name)
    max_ell: int = 3
    correlation: int = 3
    num_interactions: int = 2
    num_radial_basis: int = 8
    num_polynomial_cutoff: int = 5
    radial_mlp: tuple[int, ...] = (64, 64, 64)
    readout_mlp_hidden: int = 16
    avg_num_neighbors: float = 1.0
    atomic_energies: tuple[float, ...] = ()
    scale: float = 1.0
    shift: float = 0.0
    dtype: str = "float64"
    seed: int = 0
    first_interaction_residual: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "type_names", tuple(self.type_names))
        object.__setattr__(self, "radial_mlp", tuple(int(w) for w in self.radial_mlp))
        object.__setattr__(self, "atomic_energies", tuple(float(e) for e in self.atomic_energies))
        for problem in _spec_problems(self):
            raise ValueError(f"invalid MACESpec: {problem}")

    @property
    def torch_dtype(self) -> torch.dtype:
        """Parameter dtype as a ``torch.dtype``."""
        return _DTYPES[self.dtype]


def _spec_problems(spec: MACESpec) -> list[str]:
    problems = []
    if not spec.type_names or len(set(spec.type_names)) != len(spec.type_names):
        problems.append(f"type_names must be non-empty and unique, got {spec.type_names}")
    ranges = {
        "num_channels": (spec.num_channels, 1, None),
        "max_L": (spec.max_L, 0, 2),
        "max_ell": (spec.max_ell, 1, 4),
        "correlation": (spec.correlation, 1, 3),
        "num_interactions": (spec.num_interactions, 1, None),
        "num_radial_basis": (spec.num_radial_basis, 1, None),
        "num_polynomial_cutoff": (spec.num_polynomial_cutoff, 1, None),
        "readout_mlp_hidden": (spec.readout_mlp_hidden, 1, None),
        "seed": (spec.seed, 0, None),
    }
    for name, (value, low, high) in ranges.items():
        if not isinstance(value, int) or value < low or (high is not None and value > high):
            bound = f"[{low}, {high}]" if high is not None else f">= {low}"
            problems.append(f"{name} must be an integer in {bound}, got {value!r}")
    if any(w < 1 for w in spec.radial_mlp):
        problems.append(f"radial_mlp widths must be >= 1, got {spec.radial_mlp}")
    for name in ("r_max", "avg_num_neighbors"):
        value = getattr(spec, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            problems.append(f"{name} must be a positive number, got {value!r}")
    for name in ("scale", "shift"):
        if not math.isfinite(getattr(spec, name)):
            problems.append(f"{name} must be finite, got {getattr(spec, name)!r}")
    if spec.atomic_energies and len(spec.atomic_energies) != len(spec.type_names):
        problems.append(
            f"atomic_energies has {len(spec.atomic_energies)} entries for "
            f"{len(spec.type_names)} types"
        )
    if not all(math.isfinite(e) for e in spec.atomic_energies):
        problems.append("atomic_energies must be finite")
    if spec.dtype not in _DTYPES:
        problems.append(f"dtype must be one of {sorted(_DTYPES)}, got {spec.dtype!r}")
    return problems


def layer_irreps(spec: MACESpec) -> list[InteractionIrreps]:
    """Resolved irreps of every interaction (the last layer keeps scalars only)."""
    edge_attrs = sh_irreps(spec.max_ell)
    target = tp_target_irreps(spec.num_channels, edge_attrs)
    hidden = hidden_irreps(spec.num_channels, spec.max_L)
    scalars = scalar_irreps(spec.num_channels)
    layers = []
    for index in range(spec.num_interactions):
        node_in = scalars if index == 0 else hidden
        out = scalars if index == spec.num_interactions - 1 else hidden
        layers.append(InteractionIrreps(node_in, edge_attrs, target, out))
    return layers


class MACE(nn.Module):
    """MACE atomic energy model (see module docstring); build it with ``build_mace``.

    Args:
        spec: hyperparameters.
        generator: random source for the initial weights.
    """

    def __init__(self, spec: MACESpec, generator: torch.Generator):
        super().__init__()
        self.spec = spec
        self.type_names = list(spec.type_names)
        self.r_max = float(spec.r_max)
        n_types = len(spec.type_names)
        self.embedding = SpeciesEmbedding(n_types, spec.num_channels, generator)
        self.edge_embedding = EdgeEmbedding(
            spec.max_ell, spec.r_max, spec.num_radial_basis, spec.num_polynomial_cutoff
        )
        self.interactions = nn.ModuleList()
        self.products = nn.ModuleList()
        self.readouts = nn.ModuleList()
        layers = layer_irreps(spec)
        radial_sizes = (spec.num_radial_basis, *spec.radial_mlp)
        for index, irreps in enumerate(layers):
            residual = index > 0 or spec.first_interaction_residual
            self.interactions.append(
                Interaction(
                    irreps, n_types, radial_sizes, spec.avg_num_neighbors, residual, generator
                )
            )
            self.products.append(
                Product(irreps.target, irreps.skip_out, spec.correlation, n_types, generator)
            )
            self.readouts.append(_readout(spec, index, irreps.skip_out, generator))
        energies = spec.atomic_energies or (0.0,) * n_types
        self.scale_shift = ScaleShiftEnergy(energies, spec.scale, spec.shift)

    def forward(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-atom energies and invariant features.

        Args:
            data: batch dict with ``edge_vec`` (n_edges, 3) float64, ``edge_index``
                (2, n_edges) ``[centre, neighbour]`` and ``atom_type`` (n_atoms,).

        Returns:
            ``node_energy`` (n_atoms,) float64, eV, and ``node_features``
            (n_atoms, num_channels * num_interactions) model dtype, the scalar channels of
            every layer.
        """
        dtype = self.embedding.weight.dtype
        atom_type = data[keys.ATOM_TYPE]
        # mace-torch's edge vector points from sender (our neighbour) to receiver (centre)
        edge_attrs, edge_radial = self.edge_embedding(-data[keys.EDGE_VEC].to(dtype))
        node_feats = self.embedding(atom_type)
        channels = self.spec.num_channels
        energy = node_feats.new_zeros(node_feats.shape[0])
        features = []
        for interaction, product, readout in zip(
            self.interactions, self.products, self.readouts, strict=True
        ):
            message, sc = interaction(
                node_feats, atom_type, edge_attrs, edge_radial, data[keys.EDGE_INDEX]
            )
            node_feats = product(message, atom_type, sc)
            features.append(node_feats[:, :channels])
            energy = energy + readout(node_feats)
        return {
            keys.NODE_ENERGY: self.scale_shift(energy, atom_type),
            NODE_FEATURES: torch.cat(features, dim=1),
        }


def _readout(
    spec: MACESpec, index: int, irreps_in: Irreps, generator: torch.Generator
) -> nn.Module:
    last = index == spec.num_interactions - 1
    if last and spec.num_interactions > 1:
        return MLPReadout(irreps_in, spec.readout_mlp_hidden, generator)
    return LinearReadout(irreps_in, generator)


def build_mace(spec: MACESpec) -> MACE:
    """Build a MACE atomic energy model with parameters in ``spec.dtype``.

    Initial weights come from a local generator seeded with ``spec.seed``; the global RNG
    and default dtype are untouched.
    """
    generator = torch.Generator(device="cpu").manual_seed(spec.seed)
    return MACE(spec, generator).to(spec.torch_dtype)


register("mace", MACESpec, build_mace)

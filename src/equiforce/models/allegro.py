"""Allegro (Musaelian, Batzner et al., Nat. Commun. 2023) as nequip-allegro 0.8 builds it.

Strictly local: every ordered pair (i, j) with ``r_ij < r_max`` carries a scalar latent and
``num_tensor_features`` channels of equivariant tensor features; nothing is passed between
atoms beyond the centre's environment sum. With the two-body embedding
(``equiforce.nn.allegro.embedding``), the layers (``equiforce.nn.allegro.layers``) and a
readout MLP giving a pair energy ``e_ij``, the atomic energy is

    E_i = E0[t_i] + shift + scale * type_scales[t_i] * sum_j e_ij / sqrt(2 * avg_num_neighbors[t_i])
          (+ ZBL_i, the optional pair repulsion, ``ModelSpec.pair_repulsion``)

which is nequip's ``EdgewiseReduce`` (1/sqrt(2) included) followed by ``PerTypeScaleShift``
with scales ``scale * type_scales`` and shifts ``E0 + shift``. Species enter only through two
``(n_types, embed_dim / 2)`` embeddings, so the cost is independent of the number of species.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from equiforce.data import keys
from equiforce.models.contract import EDGE_ENERGY, NODE_FEATURES, AtomicEnergyModel, LayerState
from equiforce.models.registry import register
from equiforce.models.spec import ModelSpec, integer_problems, positive_problems
from equiforce.nn.allegro import NONLINEARITIES, AllegroEdgeEmbedding, AllegroLayers, AllegroMLP
from equiforce.nn.scale_shift import ScaleShiftEnergy
from equiforce.nn.zbl import ZBLRepulsion
from equiforce.o3.allegro_tp import allegro_layer_irreps, tensor_track_irreps

__all__ = ["Allegro", "AllegroSpec", "build_allegro"]


@dataclass(frozen=True, kw_only=True)
class AllegroSpec(ModelSpec):
    """Every hyperparameter and dataset constant of an Allegro model.

    Defaults are nequip-allegro 0.8's ``AllegroModel`` defaults unless noted. The common
    fields (``type_names``, ``r_max``, ``avg_num_neighbors``, ``atomic_energies``, ``scale``,
    ``shift``, ``dtype``, ``seed``) are ``ModelSpec``'s; Allegro is strictly local, so r_max
    is the whole receptive field (4-6 Å is typical, cost grows with r_max^3), and
    ``avg_num_neighbors`` normalises the environment and energy sums by
    ``1/sqrt(avg_num_neighbors)``.

    Attributes:
        pair_r_max: optional cutoff per (centre, neighbour) type pair, Å, row-major
            ``n_types x n_types`` flattened, every entry <= r_max (default: empty = r_max
            everywhere). nequip's ``per_edge_type_cutoff``; pairs beyond their own cutoff
            contribute exactly zero.
        l_max: highest degree of the spherical harmonics and tensor features (default 1).
            1 is fast, 2 more accurate, 3 accurate but slow.
        parity: keep both parities of every l on the tensor track (default True, O(3));
            False keeps only the spherical harmonics' parities (fewer paths, faster).
        num_layers: Allegro layers (default 2); body order grows with each layer.
        num_scalar_features: scalar latent per pair (default 64); 64-128 usual, cheap.
        num_tensor_features: tensor channels per pair (default 16); cost is linear in it,
            8-32 usual (the expensive track).
        radial_chemical_embed_dim: width of the radial x species embedding, even (default
            0 = num_scalar_features).
        two_body_mlp_hidden: hidden widths of the two-body MLP (default (64,)).
        latent_mlp_hidden: hidden widths of every layer's latent MLP (default (64,)).
        readout_mlp_hidden: hidden widths of the pair-energy MLP (default (32,)).
        mlp_nonlinearity: "silu" (default), "mish", "gelu" or None (linear MLPs), for every
            MLP.
        tp_path_channel_coupling: tensor-product weights per (channel, path) rather than
            per path (default True; more expressive, same cost).
        num_bessels: radial basis size (default 8).
        polynomial_cutoff_p: order p of the smooth envelope (default 6); smaller p decays
            more strongly with distance.
        per_type_avg_num_neighbors: optional per-centre-type replacement of
            avg_num_neighbors (default: empty).
        type_scales: optional extra per-type factors on ``scale`` (default: empty = 1);
            nequip's per-type energy scales.
    """

    pair_r_max: tuple[float, ...] = ()
    l_max: int = 1
    parity: bool = True
    num_layers: int = 2
    num_scalar_features: int = 64
    num_tensor_features: int = 16
    radial_chemical_embed_dim: int = 0
    two_body_mlp_hidden: tuple[int, ...] = (64,)
    latent_mlp_hidden: tuple[int, ...] = (64,)
    readout_mlp_hidden: tuple[int, ...] = (32,)
    mlp_nonlinearity: str | None = "silu"
    tp_path_channel_coupling: bool = True
    num_bessels: int = 8
    polynomial_cutoff_p: int = 6
    per_type_avg_num_neighbors: tuple[float, ...] = ()
    type_scales: tuple[float, ...] = ()

    def pair_r_max_matrix(self) -> torch.Tensor:
        """(n_types, n_types) float64 cutoff per (centre, neighbour) type, Å."""
        n = len(self.type_names)
        values = self.pair_r_max or (float(self.r_max),) * (n * n)
        return torch.tensor(values, dtype=torch.float64).reshape(n, n)

    def problems(self) -> list[str]:
        """``ModelSpec.problems`` plus Allegro's ranges, sizes and per-pair cutoffs."""
        n_types = len(self.type_names)
        problems = super().problems() + integer_problems(
            {
                "l_max": (self.l_max, 0, None),
                "num_layers": (self.num_layers, 1, None),
                "num_scalar_features": (self.num_scalar_features, 1, None),
                "num_tensor_features": (self.num_tensor_features, 1, None),
                "radial_chemical_embed_dim": (self.radial_chemical_embed_dim, 0, None),
                "num_bessels": (self.num_bessels, 1, None),
                "polynomial_cutoff_p": (self.polynomial_cutoff_p, 2, None),
            }
        )
        if (self.radial_chemical_embed_dim or self.num_scalar_features) % 2:
            problems.append("radial_chemical_embed_dim (or num_scalar_features) must be even")
        hidden = self.two_body_mlp_hidden + self.latent_mlp_hidden + self.readout_mlp_hidden
        if any(w < 1 for w in hidden):
            problems.append("MLP hidden widths must be >= 1")
        if self.mlp_nonlinearity not in (None, *NONLINEARITIES):
            problems.append(f"mlp_nonlinearity must be None or one of {list(NONLINEARITIES)}")
        problems += positive_problems(
            {f"pair_r_max[{k}]": v for k, v in enumerate(self.pair_r_max)}
            | {
                f"per_type_avg_num_neighbors[{k}]": v
                for k, v in enumerate(self.per_type_avg_num_neighbors)
            }
        )
        if any(v > self.r_max for v in self.pair_r_max):
            problems.append(f"pair_r_max entries must be <= r_max = {self.r_max}")
        sizes = {
            "pair_r_max": n_types * n_types,
            "per_type_avg_num_neighbors": n_types,
            "type_scales": n_types,
        }
        for name, size in sizes.items():
            value = getattr(self, name)
            if value and len(value) != size:
                problems.append(f"{name} has {len(value)} entries, expected {size} (or none)")
        if not all(math.isfinite(v) for v in self.type_scales):
            problems.append("type_scales must be finite")
        return problems


class Allegro(AtomicEnergyModel):
    """Allegro atomic energy model (see module docstring); build it with ``build_allegro``.

    Strictly local: the contract's layers are the Allegro layers acting on pairs, with no
    halo (nothing crosses atoms), so a domain-decomposed run needs ghosts to r_max only.

    Args:
        spec: hyperparameters.
        generator: random source for the initial weights.
    """

    strictly_local = True  # E_i depends on edges centred at i only (models/local_blocks.py)
    outputs = frozenset({keys.NODE_ENERGY, EDGE_ENERGY, NODE_FEATURES})

    def __init__(self, spec: AllegroSpec, generator: torch.Generator):
        super().__init__()
        self.spec = spec
        n_types = len(spec.type_names)
        irreps_sh, _ = tensor_track_irreps(spec.l_max, spec.parity)
        latent = spec.num_scalar_features
        self.embedding = AllegroEdgeEmbedding(
            spec.pair_r_max_matrix(),
            spec.num_bessels,
            spec.polynomial_cutoff_p,
            spec.radial_chemical_embed_dim or latent,
            (spec.radial_chemical_embed_dim or latent, *spec.two_body_mlp_hidden, latent),
            spec.mlp_nonlinearity,
            irreps_sh,
            spec.num_tensor_features,
            generator,
        )
        self.layers = AllegroLayers(
            allegro_layer_irreps(spec.l_max, spec.parity, spec.num_layers),
            irreps_sh,
            latent,
            spec.num_tensor_features,
            spec.latent_mlp_hidden,
            spec.mlp_nonlinearity,
            spec.tp_path_channel_coupling,
            generator,
        )
        readout_sizes = (latent * (spec.num_layers + 1), *spec.readout_mlp_hidden, 1)
        self.readout = AllegroMLP(readout_sizes, spec.mlp_nonlinearity, generator)
        avg = spec.per_type_avg_num_neighbors or (spec.avg_num_neighbors,) * n_types
        self.edge_norm = tuple(1.0 / math.sqrt(a) for a in avg)
        type_scales = spec.type_scales or (1.0,) * n_types
        self.pair_scale = tuple(spec.scale * s for s in type_scales)
        energies = spec.atomic_energies or (0.0,) * n_types
        self.scale_shift = ScaleShiftEnergy(energies, 1.0, spec.shift)
        self.pair_repulsion = None
        if spec.pair_repulsion:
            self.pair_repulsion = ZBLRepulsion(
                spec.type_names,
                spec.polynomial_cutoff_p,
                spec.pair_repulsion_form,
                spec.pair_r_max_matrix(),
            )

    @property
    def num_layers(self) -> int:
        """Allegro layers (``spec.num_layers``)."""
        return self.layers.num_layers

    def initial_state(self, data: dict[str, torch.Tensor]) -> LayerState:
        """Two-body embedding of every pair and the first layer's inputs (no halo).

        Args:
            data: batch dict with ``edge_vec`` (n_edges, 3) float64, ``edge_index``
                (2, n_edges) ``[centre, neighbour]``, ``atom_type`` (n_atoms,).
        """
        atom_type = data[keys.ATOM_TYPE]
        edge_index = data[keys.EDGE_INDEX]
        edge_types = atom_type.index_select(0, edge_index.flatten()).view_as(edge_index)
        latent, edge_sh, tensor_features = self.embedding(data[keys.EDGE_VEC], edge_types)
        # index_select, not advanced indexing: ~5x faster on CPU, forward and backward
        norm = torch.tensor(self.edge_norm, dtype=latent.dtype, device=latent.device)
        scalars, env_weights = self.layers.start(latent)
        private = {
            "atom_type": atom_type,
            "centre": edge_index[0],
            "edge_index": edge_index,
            "edge_vec": data[keys.EDGE_VEC],
            "norm": norm.index_select(0, atom_type),
            "edge_sh": edge_sh,
            "scalars": scalars,
            "env_weights": env_weights,
            "tensor_features": tensor_features,
        }
        return LayerState(None, private)

    def run_layer(self, index: int, state: LayerState) -> LayerState:
        """Allegro layer ``index`` on every pair (``AllegroLayers.layer``)."""
        carry = state.private
        scalars, env_weights, tensor_features = self.layers.layer(
            index,
            carry["scalars"],
            carry["env_weights"],
            carry["tensor_features"],
            carry["edge_sh"],
            carry["centre"],
            carry["norm"].unsqueeze(-1),
        )
        private = dict(carry)
        private.update(scalars=scalars, env_weights=env_weights, tensor_features=tensor_features)
        return LayerState(None, private)

    def final_outputs(
        self, state: LayerState, extra_outputs: frozenset[str]
    ) -> dict[str, torch.Tensor]:
        """Per-atom energies and, when asked, per-pair energies and invariant per-atom features.

        Returns:
            ``node_energy`` (n_atoms,) float64 eV; in ``extra_outputs``: ``edge_energy``
            (n_edges,) float64 eV, the pair's share of its centre's energy; ``node_features``
            (n_atoms, num_scalar_features * (num_layers + 1)) model dtype, the normalised sum
            of the centre's pair latents.
        """
        carry = state.private
        atom_type, centre, norm = carry["atom_type"], carry["centre"], carry["norm"]
        n_atoms = atom_type.shape[0]
        # every layer's latents as blocks of the readout's input, not concatenated
        pair_energy = self.readout(carry["scalars"]).squeeze(-1)
        # nequip's order: sum and normalise in the model dtype, scale in float64
        edge_sum = pair_energy.new_zeros(n_atoms).index_add(0, centre, pair_energy)
        scale = torch.tensor(self.pair_scale, dtype=torch.float64, device=norm.device)
        scale = scale.index_select(0, atom_type)
        energy = (edge_sum * norm / math.sqrt(2.0)).to(torch.float64) * scale
        zbl = None
        if self.pair_repulsion is not None:
            zbl = self.pair_repulsion.edge_energies(
                carry["edge_vec"], carry["edge_index"], atom_type
            )
            energy = energy.index_add(0, centre, zbl)
        out = {keys.NODE_ENERGY: self.scale_shift(energy, atom_type)}
        if EDGE_ENERGY in extra_outputs:
            pair_factor = (scale * norm.to(torch.float64) / math.sqrt(2.0)).index_select(0, centre)
            out[EDGE_ENERGY] = pair_energy.to(torch.float64) * pair_factor
            if zbl is not None:
                out[EDGE_ENERGY] = out[EDGE_ENERGY] + zbl
        if NODE_FEATURES in extra_outputs:
            features = torch.cat(carry["scalars"], dim=-1)
            summed = features.new_zeros(n_atoms, features.shape[1]).index_add(0, centre, features)
            out[NODE_FEATURES] = summed * norm.unsqueeze(-1)
        return out


def build_allegro(spec: AllegroSpec) -> Allegro:
    """Build an Allegro atomic energy model with parameters in ``spec.dtype``.

    Initial weights come from a local generator seeded with ``spec.seed``; the global RNG
    and default dtype are untouched.
    """
    generator = torch.Generator(device="cpu").manual_seed(spec.seed)
    return Allegro(spec, generator).to(spec.torch_dtype)


register("allegro", AllegroSpec, build_allegro)

"""MACE (Batatia et al., NeurIPS 2022) as mace-torch 0.3.16 builds ``ScaleShiftMACE``.

Defaults follow mace-torch's ``run_train`` for ``--model MACE``: Bessel radial basis with a
polynomial envelope, first interaction ``RealAgnosticInteractionBlock``, later ones
``RealAgnosticResidualInteractionBlock``, symmetric contraction of correlation 3, linear
readouts on every layer but the last, whose readout is an MLP, and
``E_i = E0[type_i] + scale * (ZBL_i + sum_layers(readout_i)) + shift`` (ZBL_i, the optional
pair repulsion, ``ModelSpec.pair_repulsion``; zero by default).

As in mace-torch, the last layer keeps only scalar features, and with a single interaction
its readout is linear. ``MACESpec.nonlinear_interactions`` swaps interactions for the
non-linear residual block of mace-torch's MH foundation models
(``equiforce.nn.mace.nonlinear``; with ``apply_cutoff`` false: the envelope on the radial MLPs'
outputs); ``MACESpec.density_normalization`` divides the default interactions' messages by a
learnt neighbourhood density (mace-torch's density blocks, MACE-MPA-0's). Edge vectors follow
mace-torch's direction (sender -> receiver, i.e. neighbour ->
centre, the negative of ``edge_vec``), so weights carry over unchanged.

Large graphs (more than ``CHUNKED_FROM * MACE.chunk_edges`` edges, or than fit one pass in
``ONE_PASS_BYTES``; on a GPU, than fit one pass in half its free memory; eager mode) run each
layer in chunks of about ``chunk_edges`` edges into consecutive receivers
(``equiforce.nn.edge_chunks``): edge embedding, interaction and product of one chunk at a time,
so per-edge and per-atom intermediates stay chunk-sized and cache-friendly. Outside training
(inference, energy + forces or stress) each layer is one autograd node
(``equiforce.nn.mace.recompute``) whose backward recomputes one chunk at a time: between
forward and backward only the layers' node features and the edge vectors are kept, never an
(n_edges x features) tensor or the edge embeddings of the whole graph. Training
(``create_graph`` in train mode) runs the same chunks with their autograd graphs kept.
Results equal the unchunked path to rounding, derivatives of any order included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from equiforce.data import keys
from equiforce.data.charge_spin import check_state
from equiforce.models.contract import (
    EDGE_PAIRS,
    LOCAL_ATOMS,
    NODE_FEATURES,
    AtomicEnergyModel,
    LayerState,
)
from equiforce.models.registry import register
from equiforce.models.spec import ModelSpec, integer_problems
from equiforce.nn import ScaleShiftEnergy
from equiforce.nn.edge_chunks import ChunkBounds, ReceiverChunks, chunk_bounds
from equiforce.nn.mace import (
    EdgeEmbedding,
    Interaction,
    InteractionIrreps,
    LinearReadout,
    MLPReadout,
    Product,
    SpeciesEmbedding,
)
from equiforce.nn.mace.electronic_state import ElectronicStateEmbedding, state_spec_problems
from equiforce.nn.mace.nonlinear import NonLinearInteraction
from equiforce.nn.mace.recompute import recomputed_layer
from equiforce.nn.zbl import ZBLRepulsion
from equiforce.o3.irreps import Irreps, hidden_irreps, scalar_irreps, sh_irreps, tp_target_irreps

# Edges per chunk of a large graph, and how many chunks' worth of edges a graph needs to be
# chunked; chosen by measurement (docs/performance.md, "MACE at 10^5 atoms" and "When to
# chunk"): smaller chunks pay more per-chunk overhead, larger ones leave the caches. Chunks
# save memory, not time: they run the radial MLP three times per edge (forward, recomputed
# forward, backward) where one pass runs it twice per bond, 1.7x the time of one pass at
# 100k-170k edges; so graphs up to 16 chunks' worth (262,144 edges) run in one pass, unless
# that pass would need more than ONE_PASS_BYTES: its peak memory per edge is about
# (768 + 1.05 W) numbers of the model's dtype, W the radial MLPs' output widths summed over the
# layers (peak RSS of one-pass calls on 166,330 edges: mace-128-l1 10.3 KB per edge in float32
# and 20.3 in float64, fit 10.5 and 21.0; mace-small 4.8, fit 4.9; mace-tiny 1.2, fit 3.4).
DEFAULT_CHUNK_EDGES = 16384
CHUNKED_FROM = 16
ONE_PASS_BYTES = 3 * 2**30
# On a GPU: one pass whenever its estimated peak fits this fraction of the device memory
# free at the call (the rest: the caller's tensors, the allocator's fragmentation).
GPU_ONE_PASS_FRACTION = 0.5


NONLINEAR_CHOICES = ("none", "later", "all")


def is_nonlinear(spec: MACESpec, index: int) -> bool:
    """Whether interaction ``index`` of ``spec`` is the non-linear residual block."""
    return spec.nonlinear_interactions == "all" or (
        spec.nonlinear_interactions == "later" and index > 0
    )


@dataclass(frozen=True, kw_only=True)
class MACESpec(ModelSpec):
    """Every hyperparameter and dataset constant of a MACE model.

    The common fields (``type_names``, ``r_max``, ``avg_num_neighbors``, ``atomic_energies``,
    ``scale``, ``shift``, ``dtype``, ``seed``) are ``ModelSpec``'s; for MACE, r_max is 4-6 Å
    for most materials and molecules (cost grows with r_max^3), ``avg_num_neighbors``
    normalises the messages, and "float32" trains about 2x faster than "float64".

    Attributes:
        num_channels: feature channels per irrep (default 64). 32 is a fast start, 128 the
            accurate mace "medium/large" setting; cost grows ~quadratically.
        max_L: highest irrep degree of the hidden features, 0..2 (default 1). 0 is fast
            (invariant messages), 1 the usual trade-off, 2 most accurate.
        max_ell: highest degree of the edge spherical harmonics, 1..4 (default 3).
        correlation: body order minus one of the product basis, 1..3 (default 3), or one
            per layer (``num_interactions`` of them, mace-torch's list form).
        num_interactions: message-passing layers (default 2); receptive field is
            ``num_interactions * r_max``.
        num_radial_basis: Bessel functions (default 8); 8-10 is plenty.
        num_polynomial_cutoff: order p of the smooth envelope (default 5).
        radial_mlp: hidden widths of the radial MLP (default (64, 64, 64)).
        readout_mlp_hidden: hidden scalars of the last layer's readout MLP (default 16).
        first_interaction_residual: the first interaction uses the residual block with a
            species-dependent self-connection (default True, mace-torch's default
            ``--interaction_first RealAgnosticResidualInteractionBlock``); False gives the plain
            block (``RealAgnosticInteractionBlock``), whose model cannot shift a species'
            energy directly and learns the offset from the E0s slowly (a 16-channel AcAc model
            was still ~0.5 eV/atom off after 25 epochs, against ~2 meV/atom with the default).
        distance_transform: None (default) or ``"agnesi"``: the radial basis sees each edge's
            length through the Agnesi transform of its pair's covalent radii
            (``equiforce.o3.radial.agnesi_transform``; mace-torch's ``--distance_transform
            Agnesi``, as in its later foundation models), the envelope the length itself.
        agnesi: the transform's constants (q, p, a) (default mace-torch's: 0.9183, 4.5791,
            1.0805).
        nonlinear_interactions: which interactions are the non-linear residual block
            (``equiforce.nn.mace.nonlinear``, mace-torch's
            ``RealAgnosticResidualNonLinearInteractionBlock``, its MH foundation models'):
            ``"none"`` (default), ``"later"`` (all but the first) or ``"all"``.
        apply_cutoff: the envelope multiplies the radial basis before the radial MLPs (True,
            default), or their outputs (False: mace-torch's ``apply_cutoff=False``; what
            keeps the non-linear block, whose MLPs have biases, smooth at the cutoff).
        edge_irreps: the irreps (an e3nn string, e.g. ``"64x0e + 64x1o + 64x2e"``) each
            interaction's ``linear_up`` maps the node features to and its convolution takes
            (mace-torch's ``edge_irreps``); None (default): the node features' own.
        edge_irreps_first: the first interaction's up-projection too, to the scalars of
            ``edge_irreps`` (mace-torch's ``use_edge_irreps_first``; default False: its node
            features' own).
        embedding_specs: the per-structure electronic state the model conditions on
            (mace-torch's ``embedding_specs``, e.g. MACE-OMOL's): ``{"total_charge": {...},
            "total_spin": {...}}``, each ``{"type": "categorical", "emb_dim": E,
            "num_classes": K, "offset": o}`` or ``{"type": "continuous", "emb_dim": E}``
            (``equiforce.nn.mace.electronic_state``), embedded and added to every atom's
            initial scalars; None (default): none. The data's ``charge`` / ``spin`` (info
            keys, ``KeySpec``) feed it; absent, a structure is a neutral singlet.
        embedding_readout: the atoms' initial scalars (species and state) also give an
            unscaled energy per atom through a linear readout (mace-torch's
            ``use_embedding_readout``; needs ``embedding_specs``; default False).
        density_normalization: the default interactions divide their messages by a learnt
            density of each atom's neighbourhood, ``1 + sum_j tanh(d(r_ij)^2)`` (d a linear
            map of the radial features), instead of ``avg_num_neighbors`` (mace-torch's
            ``RealAgnosticDensity[Residual]InteractionBlock``: MACE-MPA-0's and
            MACE-OMAT-0's; default False).
    """

    num_channels: int = 64
    max_L: int = 1  # noqa: N815 (MACE's name)
    max_ell: int = 3
    correlation: int | tuple[int, ...] = 3
    num_interactions: int = 2
    num_radial_basis: int = 8
    num_polynomial_cutoff: int = 5
    radial_mlp: tuple[int, ...] = (64, 64, 64)
    readout_mlp_hidden: int = 16
    first_interaction_residual: bool = True
    distance_transform: str | None = None
    agnesi: tuple[float, ...] = (0.9183, 4.5791, 1.0805)
    nonlinear_interactions: str = "none"
    apply_cutoff: bool = True
    edge_irreps: str | None = None
    edge_irreps_first: bool = False
    embedding_specs: dict[str, dict[str, Any]] | None = None
    embedding_readout: bool = False
    density_normalization: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.correlation, list):  # a list from YAML or Python: the tuple form
            object.__setattr__(self, "correlation", tuple(self.correlation))
        super().__post_init__()

    def layer_correlation(self, index: int) -> int:
        """The correlation order of layer ``index``'s product basis."""
        if isinstance(self.correlation, tuple):
            return self.correlation[index]
        return self.correlation

    def problems(self) -> list[str]:
        """``ModelSpec.problems`` plus MACE's ranges."""
        problems = super().problems() + integer_problems(
            {
                "num_channels": (self.num_channels, 1, None),
                "max_L": (self.max_L, 0, 2),
                "max_ell": (self.max_ell, 1, 4),
                "num_interactions": (self.num_interactions, 1, None),
                "num_radial_basis": (self.num_radial_basis, 1, None),
                "num_polynomial_cutoff": (self.num_polynomial_cutoff, 1, None),
                "readout_mlp_hidden": (self.readout_mlp_hidden, 1, None),
            }
        )
        orders = self.correlation if isinstance(self.correlation, tuple) else (self.correlation,)
        for order in dict.fromkeys(orders):
            problems += integer_problems({"correlation": (order, 1, 3)})
        if isinstance(self.correlation, tuple) and len(orders) != self.num_interactions:
            problems.append(
                f"correlation has {len(orders)} orders for {self.num_interactions} "
                "interactions (give one per layer, or one number for all)"
            )
        if any(w < 1 for w in self.radial_mlp):
            problems.append(f"radial_mlp widths must be >= 1, got {self.radial_mlp}")
        if self.distance_transform not in (None, "agnesi"):
            problems.append(
                f"distance_transform must be null or 'agnesi', got {self.distance_transform!r}"
            )
        if self.nonlinear_interactions not in NONLINEAR_CHOICES:
            problems.append(
                f"nonlinear_interactions must be one of {NONLINEAR_CHOICES}, got "
                f"{self.nonlinear_interactions!r}"
            )
        elif self.nonlinear_interactions != "none" and self.apply_cutoff:
            problems.append(
                "nonlinear_interactions needs apply_cutoff false: with the envelope before its "
                "MLPs (whose biases and species embeddings are non-zero at r_max) the block "
                "is discontinuous at the cutoff"
            )
        if self.density_normalization and self.nonlinear_interactions == "all":
            problems.append(
                "density_normalization sets the default interactions' normalisation; with "
                "nonlinear_interactions 'all' there are none (the non-linear block has its own)"
            )
        if self.edge_irreps is not None:
            try:
                Irreps(self.edge_irreps)
            except (ValueError, AssertionError) as error:
                problems.append(f"edge_irreps {self.edge_irreps!r} are not irreps: {error}")
        elif self.edge_irreps_first:
            problems.append("edge_irreps_first needs edge_irreps")
        if self.embedding_specs is not None:
            problems += state_spec_problems(self.embedding_specs)
        elif self.embedding_readout:
            problems.append("embedding_readout needs embedding_specs")
        if len(self.agnesi) != 3 or not all(math.isfinite(v) for v in self.agnesi):
            problems.append(f"agnesi must be three finite numbers (q, p, a), got {self.agnesi}")
        return problems


def layer_irreps(spec: MACESpec) -> list[InteractionIrreps]:
    """Resolved irreps of every interaction (the last layer keeps scalars only)."""
    edge_attrs = sh_irreps(spec.max_ell)
    target = tp_target_irreps(spec.num_channels, edge_attrs)
    hidden = hidden_irreps(spec.num_channels, spec.max_L)
    scalars = scalar_irreps(spec.num_channels)
    layers = []
    edge = None if spec.edge_irreps is None else Irreps(spec.edge_irreps)
    for index in range(spec.num_interactions):
        node_in = scalars if index == 0 else hidden
        out = scalars if index == spec.num_interactions - 1 else hidden
        up = edge
        if index == 0 and edge is not None:  # mace-torch: the first layer keeps its own
            up = Irreps(f"{edge.count((0, 1))}x0e") if spec.edge_irreps_first else None
        layers.append(InteractionIrreps(node_in, edge_attrs, target, out, up))
    return layers


class MACE(AtomicEnergyModel):
    """MACE atomic energy model (see module docstring); build it with ``build_mace``.

    Layer ``k`` of the contract's layer-at-a-time API is interaction ``k`` + its product
    block + its readout; the halo is the node features (n_atoms, hidden dim of layer k-1)
    that interaction ``k`` reads from the neighbours. With ``LOCAL_ATOMS`` in the batch
    (a domain of a domain-decomposed run), everything but ``linear_up`` of the senders
    (the receivers' messages, self-connection, product, readout) runs on the local rows
    only: the ghosts' rows would be overwritten by the next exchange, and their energies
    are not wanted.

    Attributes:
        chunk_edges: graphs with more than ``CHUNKED_FROM`` times this many edges (or more
            than ``one_pass_edges()``; on a GPU: more than ``one_pass_edges(device)``) run
            layer by layer in chunks of about this many edges (default ``DEFAULT_CHUNK_EDGES``),
            recomputed in the backward unless training; None: never chunk. A runtime
            setting, not saved in model files.

    Args:
        spec: hyperparameters.
        generator: random source for the initial weights.
    """

    outputs = frozenset({keys.NODE_ENERGY, NODE_FEATURES})
    uses_edge_pairs = True  # the radial MLP runs once per bond when the batch has EDGE_PAIRS

    def __init__(self, spec: MACESpec, generator: torch.Generator):
        super().__init__()
        self.spec = spec
        n_types = len(spec.type_names)
        self.embedding = SpeciesEmbedding(n_types, spec.num_channels, generator)
        self.edge_embedding = EdgeEmbedding(
            spec.max_ell,
            spec.r_max,
            spec.num_radial_basis,
            spec.num_polynomial_cutoff,
            tuple(spec.agnesi) if spec.distance_transform == "agnesi" else None,
            spec.type_names,
            spec.apply_cutoff,
        )
        self.interactions = nn.ModuleList()
        self.products = nn.ModuleList()
        self.readouts = nn.ModuleList()
        layers = layer_irreps(spec)
        radial_sizes = (spec.num_radial_basis, *spec.radial_mlp)
        for index, irreps in enumerate(layers):
            residual = index > 0 or spec.first_interaction_residual
            if is_nonlinear(spec, index):
                block = NonLinearInteraction(
                    irreps, n_types, radial_sizes, generator, spec.apply_cutoff
                )
            else:
                block = Interaction(
                    irreps,
                    n_types,
                    radial_sizes,
                    spec.avg_num_neighbors,
                    residual,
                    generator,
                    spec.apply_cutoff,
                    spec.density_normalization,
                )
            self.interactions.append(block)
            self.products.append(
                Product(
                    irreps.target,
                    irreps.skip_out,
                    spec.layer_correlation(index),
                    n_types,
                    generator,
                )
            )
            self.readouts.append(_readout(spec, index, irreps.skip_out, generator))
        energies = spec.atomic_energies or (0.0,) * n_types
        self.scale_shift = ScaleShiftEnergy(energies, spec.scale, spec.shift)
        self.pair_repulsion = None
        if spec.pair_repulsion:
            cutoffs = torch.full((n_types, n_types), float(spec.r_max), dtype=torch.float64)
            self.pair_repulsion = ZBLRepulsion(
                spec.type_names, spec.num_polynomial_cutoff, spec.pair_repulsion_form, cutoffs
            )
        self.chunk_edges: int | None = DEFAULT_CHUNK_EDGES
        # last, so that a model without them draws the same weights for everything else
        self.electronic_state = None
        if spec.embedding_specs is not None:
            self.electronic_state = ElectronicStateEmbedding(
                spec.embedding_specs, spec.num_channels, generator
            )
        self.state_readout = None
        if spec.embedding_readout:
            self.state_readout = LinearReadout(scalar_irreps(spec.num_channels), generator)

    @property
    def graph_inputs(self) -> tuple[str, ...]:
        """The state quantities of ``spec.embedding_specs`` (none without)."""
        return () if self.electronic_state is None else self.electronic_state.names

    def check_graph_inputs(self, data: dict[str, torch.Tensor]) -> None:
        """The categorical state quantities are integers the tables embed (``check_state``)."""
        if self.electronic_state is not None:
            check_state(self.electronic_state.specs, data)

    @property
    def num_layers(self) -> int:
        """Interactions (``spec.num_interactions``)."""
        return len(self.interactions)

    def initial_state(self, data: dict[str, torch.Tensor]) -> LayerState:
        """Species embedding as the halo; edge embeddings, chunk plan, the energies the layers
        add to (zero, or the ZBL pair energies with ``spec.pair_repulsion``).

        Args:
            data: batch dict with ``edge_vec`` (n_edges, 3) float64, ``edge_index``
                (2, n_edges) ``[centre, neighbour]`` and ``atom_type`` (n_atoms,); optionally
                ``LOCAL_ATOMS`` (an int: centres are below it; class docstring) and
                ``EDGE_PAIRS`` (the radial MLP then runs once per bond; ignored with chunks or
                ``LOCAL_ATOMS``).
        """
        dtype = self.embedding.weight.dtype
        atom_type = data[keys.ATOM_TYPE]
        edge_index, edge_vec = data[keys.EDGE_INDEX], data[keys.EDGE_VEC]
        node_feats = self.embedding(atom_type)
        if self.electronic_state is not None:
            state = {name: data[name] for name in self.electronic_state.names}
            node_feats = node_feats + self.electronic_state(state, data[keys.BATCH])
        n_local = data.get(LOCAL_ATOMS)
        n_rows = node_feats.shape[0] if n_local is None else int(n_local)
        energy = node_feats.new_zeros(n_rows)
        state_energy = None
        if self.state_readout is not None:
            state_energy = self.state_readout(node_feats[:n_rows]).to(torch.float64)
        if self.pair_repulsion is not None:
            zbl = self.pair_repulsion(edge_vec, edge_index, atom_type, n_rows)
            energy = energy + zbl.to(energy.dtype)
        chunks = self._chunks(edge_index, n_rows)
        if chunks is not None and chunks.edge_order is not None:
            edge_vec = edge_vec[chunks.edge_order]
        # chunks recomputed in the backward (their layers embed the edges) unless training,
        # whose double backward keeps every chunk's graph anyway
        recompute = chunks is not None and not (torch.is_grad_enabled() and self.training)
        edge_attrs = edge_radial = None
        if not recompute:
            edge_types = None
            if self.edge_embedding.needs_types:  # in edge_vec's order
                ends = edge_index if chunks is None else (chunks.receiver, chunks.sender)
                edge_types = (atom_type[ends[0]], atom_type[ends[1]])
            # mace-torch's edge vector points from sender (our neighbour) to receiver (centre)
            edge_attrs, edge_radial = self.edge_embedding(-edge_vec.to(dtype), edge_types)
        if chunks is not None and not recompute:
            chunks = ReceiverChunks.from_bounds(chunks)
        private = {
            "atom_type": atom_type,
            "n_local": None if n_local is None else n_rows,
            "edge_index": edge_index,
            "edge_attrs": edge_attrs,
            "edge_radial": edge_radial,
            "edge_pairs": data.get(EDGE_PAIRS) if chunks is None and n_local is None else None,
            "edge_vec": edge_vec,
            "chunks": chunks,
            "recompute": recompute,
            "energy": energy,
            "state_energy": state_energy,
            "features": [],
        }
        return LayerState(node_feats, private)

    def run_layer(self, index: int, state: LayerState) -> LayerState:
        """Interaction ``index`` + product (whole graph or in receiver chunks) + readout."""
        carry = state.private
        interaction, product = self.interactions[index], self.products[index]
        atom_type, edge_attrs, edge_radial, edge_index, n_local = (
            carry["atom_type"],
            carry["edge_attrs"],
            carry["edge_radial"],
            carry["edge_index"],
            carry["n_local"],
        )
        if carry["recompute"]:
            node_feats = recomputed_layer(
                self.edge_embedding,
                interaction,
                product,
                state.halo,
                carry["edge_vec"],
                atom_type,
                carry["chunks"],
            )
        elif carry["chunks"] is None and n_local is None:
            message, sc = interaction(
                state.halo, atom_type, edge_attrs, edge_radial, edge_index, carry["edge_pairs"]
            )
            node_feats = product(message, atom_type, sc)
        elif carry["chunks"] is None:  # messages onto the local rows (the receivers) only
            message, sc = interaction.messages(
                interaction.linear_up(state.halo),
                state.halo[:n_local],
                atom_type[:n_local],
                edge_attrs,
                edge_radial,
                edge_index[1],
                edge_index[0],
                up_type=atom_type,
            )
            node_feats = product(message, atom_type[:n_local], sc)
        else:
            node_feats = _layer_in_chunks(
                interaction,
                product,
                state.halo,
                atom_type,
                edge_attrs,
                edge_radial,
                carry["chunks"],
            )
        private = dict(carry)
        private["features"] = [*carry["features"], node_feats[:, : self.spec.num_channels]]
        private["energy"] = carry["energy"] + self.readouts[index](node_feats)
        return LayerState(node_feats, private)

    def final_outputs(
        self, state: LayerState, extra_outputs: frozenset[str]
    ) -> dict[str, torch.Tensor]:
        """``node_energy`` (n_atoms,) float64 eV (with ``embedding_readout``, its unscaled
        energy too) and, when asked, ``node_features`` (n_atoms, num_channels *
        num_interactions) model dtype, every layer's scalars."""
        carry = state.private
        atom_type = carry["atom_type"][: carry["energy"].shape[0]]
        node_energy = self.scale_shift(carry["energy"], atom_type)
        if carry["state_energy"] is not None:
            node_energy = node_energy + carry["state_energy"]
        out = {keys.NODE_ENERGY: node_energy}
        if NODE_FEATURES in extra_outputs:
            out[NODE_FEATURES] = torch.cat(carry["features"], dim=1)
        return out

    def _chunks(self, edge_index: torch.Tensor, n_atoms: int) -> ChunkBounds | None:
        """The chunks of a large graph in eager mode, else None (one pass over the graph).

        On the CPU a graph runs in one pass up to ``CHUNKED_FROM`` chunks' worth of edges and
        ``one_pass_edges()``; on a GPU whenever its one pass fits ``one_pass_edges(device)``
        (chunks save memory, not time, and a GPU call has the device's memory to itself):
        ``fits_one_pass``. Traced or compiled calls (symbolic sizes) never chunk: the plan
        depends on the data.
        """
        n_edges = edge_index.shape[1]
        if (
            self.chunk_edges is None
            or not isinstance(n_edges, int)
            or torch.compiler.is_compiling()
            or self.fits_one_pass(n_edges, edge_index.device)
        ):
            return None
        return chunk_bounds(edge_index, n_atoms, self.chunk_edges)

    def fits_one_pass(self, n_edges: int, device: torch.device) -> bool:
        """Whether a graph of ``n_edges`` edges on ``device`` runs in one pass (``_chunks``):
        on a CUDA device when it fits ``one_pass_edges(device)``, elsewhere when it has at most
        ``CHUNKED_FROM`` chunks' worth of edges and fits ``one_pass_edges()``."""
        if device.type == "cuda":
            return n_edges <= self.one_pass_edges(device)
        return n_edges <= min(CHUNKED_FROM * self.chunk_edges, self.one_pass_edges())

    def one_pass_edges(self, device: torch.device | None = None) -> int:
        """The most edges whose one-pass call stays within the memory budget, estimated from
        the radial MLPs' output widths and the dtype of their weights (``ONE_PASS_BYTES``).

        Args:
            device: where the call runs; the budget is ``ONE_PASS_BYTES`` on the CPU (None),
                and on a CUDA device ``GPU_ONE_PASS_FRACTION`` of its memory free now.
        """
        widths = sum(interaction.radial_mlp.sizes[-1] for interaction in self.interactions)
        itemsize = next(self.interactions[0].radial_mlp.parameters()).element_size()
        budget = ONE_PASS_BYTES
        if device is not None and device.type == "cuda":
            budget = GPU_ONE_PASS_FRACTION * torch.cuda.mem_get_info(device)[0]
        return int(budget / ((768 + 1.05 * widths) * itemsize))


def _layer_in_chunks(
    interaction: Interaction,
    product: Product,
    node_feats: torch.Tensor,
    atom_type: torch.Tensor,
    edge_attrs: torch.Tensor,
    edge_radial: torch.Tensor,
    chunks: ReceiverChunks,
) -> torch.Tensor:
    """One layer (interaction + product) chunk by chunk; (n_receivers, skip_out.dim).

    Each chunk gets its local nodes' up-projected features (one gather for all chunks, so
    the backward scatters once, not once per chunk), its receivers' features and species
    and its edges' embeddings, its autograd graph kept (training). The chunks'
    receivers are the first ``n_receivers`` atoms (all, or a domain's local atoms).
    """
    up = interaction.linear_up(node_feats).index_select(0, chunks.nodes)
    up_type = atom_type.index_select(0, chunks.nodes)
    n_receivers = sum(chunks.receiver_sizes)
    parts = zip(
        up.split(chunks.node_sizes),
        up_type.split(chunks.node_sizes),
        node_feats[:n_receivers].split(chunks.receiver_sizes),
        atom_type[:n_receivers].split(chunks.receiver_sizes),
        edge_attrs.split(chunks.edge_sizes),
        edge_radial.split(chunks.edge_sizes),
        chunks.senders,
        chunks.receivers,
        chunks.first_rows,
        strict=True,
    )
    return torch.cat([_chunk_layer(interaction, product, *args) for args in parts])


def _chunk_layer(
    interaction: Interaction,
    product: Product,
    up: torch.Tensor,
    up_type: torch.Tensor,
    node_feats: torch.Tensor,
    atom_type: torch.Tensor,
    edge_attrs: torch.Tensor,
    edge_radial: torch.Tensor,
    sender: torch.Tensor,
    receiver: torch.Tensor,
    first_row: int,
) -> torch.Tensor:
    """New features (n_receivers, skip_out.dim) of one chunk's receivers."""
    message, sc = interaction.messages(
        up,
        node_feats,
        atom_type,
        edge_attrs,
        edge_radial,
        sender,
        receiver,
        first_row,
        up_type=up_type,
    )
    return product(message, atom_type, sc)


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

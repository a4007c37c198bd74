"""The model contract in code: what an architecture and a potential promise, and its check.

Two levels, each a class that the code implements and integrations (LAMMPS, export, the ASE
calculator, the trainer) read instead of guessing:

* ``AtomicEnergyModel`` (architecture level, an ``nn.Module`` ABC that MACE and Allegro
  extend): a batch dict with ``edge_vec`` in, per-atom energies out. It declares its
  ``spec`` (``type_names``, ``r_max``, ...), whether it is ``strictly_local`` (atom i's
  energy depends only on the edges centred at i: no message passing, LAMMPS needs ghosts
  to r_max and no exchange), its ``num_layers``, ``message_passing_layers`` and
  ``receptive_field`` (Å), and which ``outputs`` it can give (``OUTPUTS``: ``node_energy``
  always; on request, ``extra_outputs``, ``edge_energy`` per pair for Allegro and
  ``node_features``: made only when asked, since energy and forces never need them and they
  cost up to ~10% of an Allegro inference call). It runs one layer at a time:
  ``initial_state(data)`` -> ``run_layer(k, state)`` for k = 0..num_layers-1 ->
  ``final_outputs(state, extra_outputs)``; ``forward`` is exactly ``run_layers``. Between
  layers of a message-passing model, ``run_layers(..., exchange=f)`` hands the per-atom
  tensor the next layer reads from neighbours (``LayerState.halo``, (n_atoms, F)) to
  ``f(k, halo) -> halo``: the place where a domain-decomposed run overwrites its ghost
  atoms' rows with their owners' (a forward halo exchange, whose backward is a reverse
  one). With ``f`` the identity the result is ``forward``'s, bit for bit. A domain's batch
  may name its local atoms (``LOCAL_ATOMS``: the first ``n_local`` rows; the others are
  ghosts, neighbours only); a model may then run its node-wise work (everything after the
  messages are summed) on those rows alone, so that ``halo``, ``node_energy`` and
  ``node_features`` have ``n_local`` rows and ``f`` fills the ghost rows (MACE does; a model
  that ignores it keeps one row per atom, which ``f`` also accepts). A model that declares
  ``uses_edge_pairs`` may get ``EDGE_PAIRS`` in its batch (``equiforce.nn.edge_pairs``: which
  edges are the two directions of one bond, whose vectors are then opposite) and evaluate a
  function of the bond length once per bond; ``Potential`` gives it whenever no per-edge
  gradient ``dE/d(edge_vec)`` is asked for (pairing changes those, not the energy, forces or
  stress).
* ``PotentialInterface`` (potential level, a Protocol that ``Potential`` and
  ``CompiledPotential`` satisfy; STYLE §9): a batch in, ``energy`` / ``forces`` /
  ``stress`` out, plus ``family``, ``spec``, ``energy_model``, ``type_names``, ``r_max``,
  ``dtype``, ``device``. ``POTENTIAL_METADATA`` lists its non-call members, which a wrapper
  delegates to the potential it wraps.

The checks of the contract (``check_declaration``, ``check_model``) are in
``equiforce.models.check``.

Output conventions (float64 where it is energy; units eV, Å):

* ``node_energy``: (n_atoms,) float64, eV, E0 and shift included; ``energy`` is its sum per
  graph.
* ``edge_energy``: (n_edges,) float64, eV: pair (i, j)'s share of E_i, without E0/shift, so
  ``node_energy - sum_j edge_energy`` depends on the species only.
* ``node_features``: (n_atoms, F) model dtype, invariant per-atom features.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import FunctionType
from typing import Any, Callable, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from equiforce.data import keys
from equiforce.models.potential import EDGE_PAIRS, NODE_FEATURES
from equiforce.models.spec import DTYPES, ModelSpec

__all__ = [
    "EDGE_ENERGY",
    "EDGE_PAIRS",
    "LOCAL_ATOMS",
    "NODE_FEATURES",
    "OUTPUTS",
    "POTENTIAL_METADATA",
    "AtomicEnergyModel",
    "Exchange",
    "LayerState",
    "PotentialInterface",
    "run_layers",
]

EDGE_ENERGY = "edge_energy"  # (n_edges,) float64, eV: pair (i, j)'s share of E_i (no E0/shift)
OUTPUTS = frozenset({keys.NODE_ENERGY, EDGE_ENERGY, NODE_FEATURES})
# optional batch entry, an int: the first n_local atoms are a domain's own, the rest ghosts
# (in edges as neighbours only); outputs are wanted for the local atoms alone
LOCAL_ATOMS = "n_local"

# ``exchange(k, halo) -> halo``: called on the halo entering layer k >= 1, (n_atoms, F) or,
# with ``LOCAL_ATOMS`` in the batch, possibly only the local rows (n_local, F); returns the
# (n_atoms, F) halo with every ghost row filled
Exchange = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass
class LayerState:
    """What one layer hands to the next (``AtomicEnergyModel.run_layer``).

    Attributes:
        halo: (n_atoms, F) model dtype: the per-atom tensor the next layer reads from each
            atom's neighbours, i.e. what a halo exchange forwards to ghost atoms; None for
            strictly local models (nothing crosses atoms). After a layer of a model that
            honours ``LOCAL_ATOMS``, only the local rows (n_local, F).
        private: the family's own carry (edge embeddings, running energies, ...); callers
            pass it on untouched.
    """

    halo: torch.Tensor | None
    private: dict[str, Any]


class AtomicEnergyModel(nn.Module, ABC):
    """An architecture: per-atom energies from a batch with edge vectors (module docstring).

    Subclasses set ``self.spec`` (a ``ModelSpec``) and the class attributes, and implement
    ``num_layers``, ``initial_state``, ``run_layer`` and ``final_outputs``.

    Attributes:
        spec: the family's frozen spec; ``type_names`` and ``r_max`` are read from it, and
            its ``dtype`` follows the parameters when they are cast (``_apply``).
        strictly_local: E_i depends only on the edges centred at i (their vectors and both
            atoms' species); such a model may run in blocks of centre atoms
            (``models/local_blocks.py``) and needs no halo exchange.
        outputs: the names in ``OUTPUTS`` that ``forward`` can return (``node_energy``
            always, the others when asked for in ``extra_outputs``).
        uses_edge_pairs: the model reads ``EDGE_PAIRS`` when the batch has it (module
            docstring), so ``Potential`` computes them for it.
        graph_inputs: the per-graph electronic state it conditions on (names among
            ``keys.GRAPH_STATE_KEYS``: total charge, spin multiplicity), which its batches
            must carry; () for most models. LAMMPS gives the whole system's; TorchSim, whose
            SimState has none, is told each system's structure (``EquiforceModel.
            set_systems``).
    """

    strictly_local: ClassVar[bool] = False
    uses_edge_pairs: ClassVar[bool] = False
    outputs: ClassVar[frozenset[str]] = frozenset({keys.NODE_ENERGY})
    spec: ModelSpec

    def _apply(self, fn, recurse=True):
        """``nn.Module``'s cast or move of every tensor (``.to``, ``.double()``, a precision
        policy), then ``spec.dtype`` set to the parameters' dtype: the spec states the dtype
        the model is in for every reader (model files, converters, exports)."""
        super()._apply(fn, recurse)
        parameter = next(self.parameters(), None)
        dtype = None if parameter is None else str(parameter.dtype).removeprefix("torch.")
        if dtype in DTYPES and self.spec.dtype != dtype:
            self.spec = dataclasses.replace(self.spec, dtype=dtype)
        return self

    @property
    def type_names(self) -> list[str]:
        """Chemical symbols in the order of ``atom_type`` indices."""
        return list(self.spec.type_names)

    @property
    def r_max(self) -> float:
        """Cutoff radius, Å: edges are pairs closer than this."""
        return float(self.spec.r_max)

    @property
    def graph_inputs(self) -> tuple[str, ...]:
        """Per-graph state the model reads (class docstring); none by default."""
        return ()

    def check_graph_inputs(self, data: dict[str, torch.Tensor]) -> None:
        """Raise ``ValueError`` for a ``graph_inputs`` value the model cannot take (named).
        ``Potential`` runs it on every eager call; a traced program (compiled, exported)
        holds no data-dependent check, so its caller runs it on the batch first. Nothing by
        default."""

    @property
    @abstractmethod
    def num_layers(self) -> int:
        """Number of ``run_layer`` calls of one evaluation (>= 1)."""

    @property
    def message_passing_layers(self) -> int:
        """Layers that pass messages between atoms: 0 when strictly local, else num_layers."""
        return 0 if self.strictly_local else self.num_layers

    @property
    def receptive_field(self) -> float:
        """Å: E_i depends on atoms up to this far (``r_max * max(1, message_passing_layers)``)."""
        return self.r_max * max(1, self.message_passing_layers)

    @abstractmethod
    def initial_state(self, data: dict[str, torch.Tensor]) -> LayerState:
        """Embeddings before layer 0.

        Args:
            data: batch dict with ``edge_vec`` (n_edges, 3) float64 Å, ``edge_index``
                (2, n_edges) ``[centre, neighbour]``, ``atom_type`` (n_atoms,) and ``batch``
                (n_atoms,); any atom may be a ghost (only its species and the edges matter);
                the ``graph_inputs`` (n_graphs,) float64; optionally ``LOCAL_ATOMS`` and
                ``EDGE_PAIRS`` (module docstring).
        """

    @abstractmethod
    def run_layer(self, index: int, state: LayerState) -> LayerState:
        """Layer ``index`` (0-based). Rows of atoms with incomplete neighbourhoods (ghosts)
        come out wrong in ``halo`` (or are left out: ``LOCAL_ATOMS``); a halo exchange
        overwrites (fills) them before the next layer."""

    @abstractmethod
    def final_outputs(
        self, state: LayerState, extra_outputs: frozenset[str]
    ) -> dict[str, torch.Tensor]:
        """``node_energy`` and the ``extra_outputs`` (declared ``outputs``) from the state
        after the last layer (conventions above)."""

    def forward(
        self, data: dict[str, torch.Tensor], extra_outputs: frozenset[str] = frozenset()
    ) -> dict[str, torch.Tensor]:
        """``run_layers(self, data, extra_outputs=...)``: a batch's ``node_energy`` and the
        ``extra_outputs`` asked for (module docstring)."""
        return run_layers(self, data, extra_outputs=extra_outputs)


def run_layers(
    model: AtomicEnergyModel,
    data: dict[str, torch.Tensor],
    exchange: Exchange | None = None,
    extra_outputs: frozenset[str] = frozenset(),
) -> dict[str, torch.Tensor]:
    """Evaluate ``model`` layer by layer, exchanging the halo between message-passing layers.

    Args:
        model: the architecture.
        data: its input batch (see ``AtomicEnergyModel.initial_state``).
        exchange: ``f(k, halo) -> halo`` (``Exchange``: one row per atom out), called
            before every layer k = 1..num_layers-1 of a model with
            ``message_passing_layers`` > 0 (never for strictly local ones); None: no
            exchange (identical to the identity).
        extra_outputs: names of ``model.outputs`` wanted besides ``node_energy``.

    Returns:
        ``model.final_outputs`` of the last state.

    Raises:
        ValueError: an extra output the model does not declare.
    """
    unknown = set(extra_outputs) - (model.outputs - {keys.NODE_ENERGY})
    if unknown:
        raise ValueError(
            f"{type(model).__name__} has no output {sorted(unknown)}; its extra outputs: "
            f"{sorted(model.outputs - {keys.NODE_ENERGY})}"
        )
    state = model.initial_state(data)
    for index in range(model.num_layers):
        if index > 0 and exchange is not None and model.message_passing_layers:
            state = dataclasses.replace(state, halo=exchange(index, state.halo))
        state = model.run_layer(index, state)
    return model.final_outputs(state, frozenset(extra_outputs))


@runtime_checkable
class PotentialInterface(Protocol):
    """A potential as every integration sees it (``Potential``, ``CompiledPotential``).

    Attributes:
        family: registered architecture name (``"mace"``, ``"allegro"``).
        spec: the family's spec (saved verbatim in model files).
        energy_model: the architecture (for per-layer and per-pair access).
    """

    family: str
    spec: ModelSpec
    energy_model: AtomicEnergyModel

    @property
    def type_names(self) -> list[str]:
        """Chemical symbols in ``atom_type`` order."""

    @property
    def r_max(self) -> float:
        """Cutoff radius, Å."""

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype."""

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""

    def spec_dict(self) -> dict[str, Any]:
        """The spec as a plain dict (JSON/YAML friendly)."""

    def __call__(
        self,
        data: dict[str, torch.Tensor],
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """``energy`` (n_graphs,), ``node_energy`` (n_atoms,), on request ``forces``
        (n_atoms, 3) eV/Å, ``stress`` (n_graphs, 3, 3) eV/Å^3 and ``virial`` (n_graphs, 3, 3)
        eV, all float64, plus the energy model's ``outputs`` (``Potential.forward``)."""


# the interface's members besides the call, derived from the Protocol (one list to keep)
POTENTIAL_METADATA: tuple[str, ...] = tuple(
    sorted(
        {*PotentialInterface.__annotations__}
        | {
            name
            for name, member in vars(PotentialInterface).items()
            if isinstance(member, (property, FunctionType)) and not name.startswith("_")
        }
    )
)

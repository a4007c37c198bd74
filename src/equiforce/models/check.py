"""Checks of the model contract (``equiforce.models.contract``).

* ``check_declaration(potential)``: the declarations alone (types, spec problems, metadata
  that must agree with the spec, declared outputs, layer counts), attribute reads only.
  ``build_model`` runs it on every build: it costs microseconds, while a forward pass would
  add a first-call kernel load and a graph evaluation to every build in training, sweeps,
  conversions and the test suite.
* ``check_model(potential)``: the declaration plus one evaluation (energy, forces, stress)
  on ``check_batch`` (two small graphs, every species of the model) and three probes of the
  energy model: layer by layer with a recording exchange equals ``forward``, a strictly
  local model's other atoms ignore the removal of one atom's edges, and a dimer at r_max
  has the energy of two isolated atoms (the declared cutoff is the real one). One call
  costs about one small energy + forces evaluation (tens of milliseconds for small models);
  ``load_model``, the ASE calculator, ``compile_potential`` and the tests run it.

Tolerances: 1e-9 relative for float64 parameters, 1e-2 for any lower precision (a probe
compares two evaluations of the same model, so it only needs to see gross violations).
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import torch
from ase.data import atomic_numbers

from equiforce.data import keys
from equiforce.data.batch import batch_to, collate
from equiforce.data.graph import Configuration, configuration_to_graph
from equiforce.models.contract import (
    EDGE_ENERGY,
    NODE_FEATURES,
    OUTPUTS,
    POTENTIAL_METADATA,
    AtomicEnergyModel,
    run_layers,
)
from equiforce.models.potential import edge_vectors, graph_energy, select_inputs
from equiforce.models.spec import ModelSpec

__all__ = [
    "ModelContractError",
    "check_batch",
    "check_declaration",
    "check_model",
    "declaration_problems",
]

ModelT = TypeVar("ModelT")

_FLOAT64_OUTPUTS = {
    keys.ENERGY: "graphs",
    keys.NODE_ENERGY: "atoms",
    keys.FORCES: "atoms, 3",
    keys.STRESS: "graphs, 3, 3",
    keys.VIRIAL: "graphs, 3, 3",
}


class ModelContractError(ValueError):
    """A model breaks the contract; the message lists every problem found."""


def _raise(model: Any, problems: list[str]) -> None:
    if problems:
        name = f"{getattr(model, 'family', type(model).__name__)} model"
        raise ModelContractError(f"{name} breaks the model contract: " + "; ".join(problems))


def check_declaration(model: Any) -> None:
    """Check what a potential declares about itself, without running it (module docstring).

    Raises:
        ModelContractError: listing every inconsistency found.
    """
    _raise(model, declaration_problems(model))


def declaration_problems(model: Any) -> list[str]:
    """The problems ``check_declaration`` reports (empty when consistent)."""
    missing = [name for name in POTENTIAL_METADATA if not hasattr(model, name)]
    if missing or not callable(model):
        return [f"not a PotentialInterface: missing {missing or ['__call__']}"]
    spec, energy_model = model.spec, model.energy_model
    if not isinstance(energy_model, AtomicEnergyModel):
        return [f"energy_model is a {type(energy_model).__name__}, not an AtomicEnergyModel"]
    if not isinstance(spec, ModelSpec):
        return [f"spec is a {type(spec).__name__}, not a ModelSpec"]
    problems = [f"spec: {problem}" for problem in spec.problems()]
    for name, value in (("type_names", list(spec.type_names)), ("r_max", float(spec.r_max))):
        for owner in (model, energy_model):
            if getattr(owner, name) != value:
                problems.append(f"{name} {getattr(owner, name)!r} is not the spec's {value!r}")
    declared = energy_model.outputs
    if keys.NODE_ENERGY not in declared or not declared <= OUTPUTS:
        problems.append(
            f"outputs {sorted(declared)} must include {keys.NODE_ENERGY!r} and be among "
            f"{sorted(OUTPUTS)}"
        )
    layers = energy_model.num_layers
    if not isinstance(layers, int) or isinstance(layers, bool) or layers < 1:
        problems.append(f"num_layers must be an integer >= 1, got {layers!r}")
    if not isinstance(energy_model.strictly_local, bool):
        problems.append(f"strictly_local must be a bool, got {energy_model.strictly_local!r}")
    if not any(True for _ in model.parameters()) or not model.dtype.is_floating_point:
        problems.append("the model needs floating-point parameters")
    return problems


def check_batch(type_names: list[str], r_max: float) -> dict[str, torch.Tensor]:
    """Two small graphs holding every species: a periodic triclinic cell and a molecule.

    The cell holds 8 atoms on a jittered 2x2x2 grid of spacing ``max(1, 0.45 r_max)`` Å
    (each atom has tens of neighbours, periodic images included); the molecule is a
    zigzag chain of ``max(5, n_types - 8)`` atoms about ``min(1.2, 0.45 r_max)`` Å apart.
    Species are assigned in turn. Deterministic (a local NumPy generator).

    Returns:
        The collated batch (CPU), float64 positions and cell.
    """
    rng = np.random.default_rng(0)
    numbers = [atomic_numbers[name] for name in type_names]
    step = max(1.0, 0.45 * r_max)
    grid = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)], float)
    cell = step * np.array([[2.0, 0.0, 0.0], [0.3, 2.0, 0.0], [0.2, 0.1, 2.1]])
    crystal = Configuration(
        atomic_numbers=np.array([numbers[n % len(numbers)] for n in range(8)]),
        positions=(grid / 2.0) @ cell + rng.normal(scale=0.1 * step, size=(8, 3)),
        cell=cell,
        pbc=np.ones(3, dtype=bool),
        source="check_batch, periodic cell",
    )
    n_chain, bond = max(5, len(numbers) - 8), min(1.2, 0.45 * r_max)
    chain = np.array([[n * bond * 0.8, (n % 2) * bond * 0.6, 0.0] for n in range(n_chain)])
    molecule = Configuration(
        atomic_numbers=np.array([numbers[(n + 8) % len(numbers)] for n in range(n_chain)]),
        positions=chain + rng.normal(scale=0.05 * bond, size=(n_chain, 3)),
        source="check_batch, molecule",
    )
    return collate([configuration_to_graph(c, type_names, r_max) for c in (crystal, molecule)])


def check_model(model: ModelT) -> ModelT:
    """Check a potential's declarations and one evaluation against the contract.

    Runs ``model`` (energy, forces, stress; no derivative graph kept) and its energy model on
    ``check_batch(model.type_names, model.r_max)`` on the model's device and checks: the
    output keys (the derivatives plus exactly the declared outputs), shapes, float64
    energies/forces/stress/virial and per-pair energies, finite values, energy = sum of
    node energies per graph, zero stress without a cell, ``node_energy - sum of
    edge_energy`` a function of the species, and the three probes of the module docstring.
    The model's mode and parameters are left as they were.

    Returns:
        ``model`` itself (so that ``return check_model(model)`` reads as one step).

    Raises:
        ModelContractError: naming every problem found (or the error of a failed run).
    """
    check_declaration(model)
    batch = batch_to(check_batch(model.type_names, model.r_max), model.device)
    try:
        with torch.enable_grad():
            out = model(
                batch,
                compute_forces=True,
                compute_stress=True,
                create_graph=False,
                extra_outputs=model.energy_model.outputs - {keys.NODE_ENERGY},
            )
    except Exception as err:
        _raise(model, [f"running it on check_batch failed ({type(err).__name__}: {err})"])
    energy_model = model.energy_model
    tol = 1e-9 if model.dtype == torch.float64 else 1e-2
    problems = _output_problems(out, energy_model.outputs, batch, tol)
    _raise(model, problems)
    inputs = select_inputs(energy_model, batch)
    inputs[keys.EDGE_VEC] = edge_vectors(batch[keys.POSITIONS], batch[keys.CELL], inputs)
    with torch.no_grad():
        problems += _layer_problems(energy_model, inputs, tol)
        if energy_model.strictly_local:
            problems += _locality_problems(energy_model, inputs, tol)
        problems += _cutoff_problems(energy_model, inputs, tol)
    _raise(model, problems)
    return model


def _output_problems(
    out: dict[str, torch.Tensor],
    declared: frozenset[str],
    batch: dict[str, torch.Tensor],
    tol: float,
) -> list[str]:
    """Keys, shapes, dtypes and finiteness of a potential's outputs on ``batch``."""
    n_atoms = int(batch[keys.POSITIONS].shape[0])
    sizes = {
        "graphs": int(batch[keys.PTR].shape[0]) - 1,
        "atoms": n_atoms,
        "edges": int(batch[keys.EDGE_INDEX].shape[1]),
    }
    expected = dict(_FLOAT64_OUTPUTS)
    if EDGE_ENERGY in declared:
        expected[EDGE_ENERGY] = "edges"
    missing = sorted((set(expected) | declared) - set(out))
    extra = sorted(set(out) - set(expected) - declared)
    problems = [f"declared or required output {name!r} is missing" for name in missing]
    problems += [f"output {name!r} is not declared in outputs" for name in extra]
    for name, dims in expected.items():
        if name not in out:
            continue
        value = out[name]
        shape = tuple(sizes.get(d, 0) or int(d) for d in dims.split(", "))
        if tuple(value.shape) != shape:
            problems.append(f"{name} has shape {tuple(value.shape)}, expected {shape} ({dims})")
        if value.dtype != torch.float64:
            problems.append(f"{name} is {value.dtype}, must be torch.float64")
    features = out.get(NODE_FEATURES)
    if features is not None and (features.dim() != 2 or features.shape[0] != n_atoms):
        problems.append(f"{NODE_FEATURES} has shape {tuple(features.shape)}, expected (atoms, F)")
    for name, value in out.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            problems.append(f"{name} has non-finite values")
    if problems:
        return problems
    summed = graph_energy(out[keys.NODE_ENERGY].detach(), batch[keys.BATCH], sizes["graphs"])
    if not torch.allclose(out[keys.ENERGY].detach(), summed, rtol=1e-12, atol=1e-12):
        problems.append("energy is not the per-graph sum of node_energy")
    if out[keys.STRESS][1].abs().max() > 0:
        problems.append("stress of a graph without a cell must be zero")
    if EDGE_ENERGY in declared:
        problems += _edge_energy_problems(out, batch, tol)
    return problems


def _edge_energy_problems(
    out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], tol: float
) -> list[str]:
    """``node_energy - sum_j edge_energy_ij`` must depend on the species only (E0 + shift)."""
    node_energy = out[keys.NODE_ENERGY].detach()
    pairs = node_energy.new_zeros(node_energy.shape).index_add(
        0, batch[keys.EDGE_INDEX][0], out[EDGE_ENERGY].detach()
    )
    rest, species = node_energy - pairs, batch[keys.ATOM_TYPE]
    scale = 1.0 + node_energy.abs().max()
    for kind in species.unique():
        values = rest[species == kind]
        if values.max() - values.min() > tol * scale:
            return ["node_energy minus the sum of its edge_energy differs between atoms of one "
                    "species (edge_energy must be each pair's share of E_i)"]
    return []


def _layer_problems(
    model: AtomicEnergyModel, inputs: dict[str, torch.Tensor], tol: float
) -> list[str]:
    """``run_layers`` with a recording identity exchange must equal ``forward``."""
    calls: list[tuple[int, tuple[int, ...]]] = []

    def record(index: int, halo: torch.Tensor) -> torch.Tensor:
        calls.append((index, tuple(halo.shape)))
        return halo

    extra = model.outputs - {keys.NODE_ENERGY}
    reference = model(inputs, extra)
    layered = run_layers(model, inputs, record, extra)
    problems = []
    if set(layered) != set(reference):
        problems.append(f"run_layers gives {sorted(layered)}, forward {sorted(reference)}")
    for name in set(layered) & set(reference):
        scale = 1.0 + reference[name].abs().max()
        if (layered[name] - reference[name]).abs().max() > tol * scale:
            problems.append(f"run_layers' {name} differs from forward's")
    expected = list(range(1, model.message_passing_layers))
    n_atoms = int(inputs[keys.ATOM_TYPE].shape[0])
    if [index for index, _ in calls] != expected:
        problems.append(f"the halo was exchanged before layers {[i for i, _ in calls]}, "
                        f"expected {expected}")
    if any(shape[0] != n_atoms for _, shape in calls):
        problems.append(f"an exchanged halo does not have one row per atom ({n_atoms})")
    return problems


def _locality_problems(
    model: AtomicEnergyModel, inputs: dict[str, torch.Tensor], tol: float
) -> list[str]:
    """Declared strictly local: removing atom 0's own edges leaves the other atoms' energies."""
    reference = model(inputs)[keys.NODE_ENERGY]
    kept = inputs[keys.EDGE_INDEX][0] != 0
    reduced = dict(inputs)
    for name in (keys.EDGE_INDEX, keys.EDGE_SHIFT, keys.EDGE_VEC):
        axis = 1 if name == keys.EDGE_INDEX else 0
        reduced[name] = inputs[name].index_select(axis, kept.nonzero().flatten())
    others = model(reduced)[keys.NODE_ENERGY][1:]
    change = (others - reference[1:]).abs().max()
    if change > tol * (1.0 + reference.abs().max()):
        return [f"declares strictly_local, but removing the edges centred at atom 0 changes "
                f"other atoms' energies (by up to {float(change):.3g} eV)"]
    return []


def _cutoff_problems(
    model: AtomicEnergyModel, inputs: dict[str, torch.Tensor], tol: float
) -> list[str]:
    """A dimer just inside r_max has the node energies of its two atoms without the edge."""
    device = inputs[keys.POSITIONS].device
    n_types = len(model.type_names)
    distance = model.r_max * (1.0 - 1e-6)
    dimer = {
        keys.ATOM_TYPE: torch.tensor([0, n_types - 1], device=device),
        keys.BATCH: torch.zeros(2, dtype=torch.long, device=device),
        keys.EDGE_INDEX: torch.tensor([[0, 1], [1, 0]], device=device),
        keys.EDGE_SHIFT: torch.zeros(2, 3, dtype=torch.float64, device=device),
        keys.EDGE_VEC: torch.tensor(
            [[distance, 0.0, 0.0], [-distance, 0.0, 0.0]], dtype=torch.float64, device=device
        ),
    }
    for name in model.graph_inputs:  # one structure, the batches' default state
        default = keys.GRAPH_STATE_DEFAULTS[name]
        dimer[name] = torch.tensor([default], dtype=torch.float64, device=device)
    apart = dict(dimer)
    apart[keys.EDGE_INDEX] = dimer[keys.EDGE_INDEX][:, :0]
    for name in (keys.EDGE_SHIFT, keys.EDGE_VEC):
        apart[name] = dimer[name][:0]
    near, far = model(dimer)[keys.NODE_ENERGY], model(apart)[keys.NODE_ENERGY]
    change = (near - far).abs().max()
    if change > tol * (1.0 + far.abs().max()):
        return [f"a pair at the declared r_max = {model.r_max} Å changes the atoms' energies "
                f"by {float(change):.3g} eV: the model's real cutoff is larger"]
    return []

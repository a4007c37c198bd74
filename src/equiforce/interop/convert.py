"""A peer's model file as an equiforce model file, checked against the peer before it is
written (``equiforce convert``), and back: an equiforce MACE as a mace-torch model file
(``export_mace_torch_file``, ``equiforce convert --to mace-torch``).

Sources, told apart by their names:

- **nequip-allegro** (``*.ckpt``: the Lightning checkpoints ``nequip-train`` writes;
  ``*.nequip.zip``: ``nequip-package build``): loaded with nequip's own
  ``load_saved_model`` (the model is rebuilt from the file's config, or unpickled from the
  package's code; both load pickles) and converted by ``from_nequip_allegro``. equiforce
  types atoms by element: a checkpoint's types are named by the species its data transforms
  map to them (``chemical_species_to_atom_type_map``, one species per type); a package holds
  no such map, so its type names must be chemical symbols (as nequip's calculators assume).
  nequip's compiled files (``*.nequip.pt2``, ``*.nequip.pth``) hold no modules to convert.
- **mace-torch**, any other name: what mace-torch saves with ``torch.save``
  (``mace_run_train``'s ``*.model``, the foundation models its ``mace_mp`` downloads): a
  pickled ``MACE`` / ``ScaleShiftMACE``, loaded with ``torch.load(weights_only=False)``, and
  converted by ``from_mace_torch`` (one head of a multi-head model).

Files are unpickled as the peers load them: convert only files you trust. Both models then
evaluate ``export.build.validation_structures`` of the model's species (a molecule, a
triclinic cell, a slab and a 64-atom cell; a charge-aware model's molecule also as ions) on
the same edges, and the file is written
(``save_model``, atomically) only when every energy and force agrees within ``TOLERANCES``;
otherwise a ``ConversionError`` carries the figures and nothing is written. Needs the peer
beside equiforce (``make install-mace`` / ``make install-nequip`` build ``.venv-mace`` /
``.venv-nequip`` with both).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from equiforce.data import keys
from equiforce.interop.default_dtype import default_dtype

__all__ = [
    "TOLERANCES",
    "ConversionError",
    "convert_model_file",
    "export_mace_torch_file",
    "source_peer",
]

# (atol, rtol) of energies (eV) and forces (eV/Å) against the peer, by parameter dtype
TOLERANCES = {torch.float64: (1e-8, 1e-8), torch.float32: (1e-4, 1e-4)}

# the peer's energies (n_graphs,) in eV and forces (n_atoms, 3) in eV/Å on our batch
Reference = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]

_NEQUIP_COMPILED = (".nequip.pt2", ".nequip.pth")
_NEQUIP_FILES = (".ckpt", ".nequip.zip")


class ConversionError(ValueError):
    """The converted model disagrees with the source; ``figures`` holds the comparison."""

    def __init__(self, message: str, figures: list[dict[str, Any]]):
        super().__init__(message)
        self.figures = figures


def source_peer(source: str | os.PathLike) -> str:
    """The framework whose model file ``source`` is, by its name (module docstring).

    Raises:
        ValueError: a nequip compiled model (nothing to convert).
    """
    name = os.fspath(source)
    if name.endswith(_NEQUIP_COMPILED):
        raise ValueError(
            f"{name}: a compiled nequip model (nequip-compile) holds no modules to convert: "
            "convert the checkpoint (*.ckpt) or the package (*.nequip.zip) it was compiled from"
        )
    return "nequip-allegro" if name.endswith(_NEQUIP_FILES) else "mace-torch"


def convert_model_file(
    source: str | os.PathLike, out: str | os.PathLike, head: str | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """Convert the peer's model file ``source`` into the equiforce model file ``out``.

    Args:
        source: a mace-torch or nequip-allegro model file (module docstring).
        out: the equiforce model file to write (``save_model``).
        head: the head of a multi-head mace-torch model (``from_mace_torch``).

    Returns:
        The peer's name and, per validation structure: name, atom and edge counts, max |ours -
        peer| of the energy (eV) and forces (eV/Å), and whether they are within ``TOLERANCES``.

    Raises:
        ImportError: the peer is not installed here.
        ValueError: ``source`` is not a model of the peer (named), uses an option equiforce
            does not implement, or ``head`` is wrong.
        ConversionError: the converted model disagrees with the peer (nothing written).
    """
    from equiforce.models import save_model

    peer = source_peer(source)
    potential, reference = _LOADERS[peer](os.fspath(source), head)
    figures = _agreeing(
        potential, reference, f"{source}: the converted model disagrees with {peer}"
    )
    save_model(potential, out)
    return peer, figures


def _mace_torch(source: str, head: str | None) -> tuple[Any, Reference]:
    """The converted mace-torch model of ``source`` and mace-torch's evaluation of it."""
    from equiforce.interop.mace_torch import from_mace_torch, head_index

    _require("mace.modules", "mace-torch", "make install-mace builds .venv-mace")
    model = torch.load(source, map_location="cpu", weights_only=False)
    if isinstance(model, torch.jit.ScriptModule) or not isinstance(model, torch.nn.Module):
        kind = "a TorchScript module" if isinstance(model, torch.jit.ScriptModule) else type(model)
        raise ValueError(
            f"{source}: holds {kind}, not a mace-torch model module (a TorchScript/LAMMPS "
            "export cannot be converted: use the .model file training wrote)"
        )
    potential = from_mace_torch(model, head)
    return potential, _mace_reference(model, potential, head_index(model, head))


def _mace_reference(model: torch.nn.Module, potential, head: int = 0) -> Reference:
    """mace-torch's evaluation of ``model`` (head index ``head``) on ``potential``'s batches."""
    from equiforce.interop.mace_torch import mace_inputs

    n_types, dtype = len(potential.type_names), potential.dtype

    def reference(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        with default_dtype(dtype):  # as mace-torch's calculator runs its models
            out = model(mace_inputs(batch, n_types, dtype, head), compute_force=True)
        return out["energy"], out["forces"]

    return reference


def export_mace_torch_file(
    source: str | os.PathLike, out: str | os.PathLike
) -> list[dict[str, Any]]:
    """An equiforce MACE model file (a fine-tuned foundation model, say) as a mace-torch model
    file: ``torch.save`` of the ``ScaleShiftMACE`` that ``to_mace_torch`` builds, what
    mace-torch's calculators and tools load (``torch.load``), written atomically only when its
    energies and forces equal ours on ``validation_structures`` within ``TOLERANCES`` (the
    model in plain float: a precision policy saved with it is not mace-torch's).

    Args:
        source: an equiforce model file (``load_model``) of family ``"mace"``.
        out: the mace-torch model file to write (e.g. ``fine_tuned.model``).

    Returns:
        The comparison's figures (``convert_model_file``'s).

    Raises:
        ImportError: mace-torch is not installed here.
        ValueError: not a MACE model, or an option mace-torch lacks (``to_mace_torch``).
        ConversionError: mace-torch disagrees with the model (nothing written).
    """
    from equiforce.files import atomic_torch_save
    from equiforce.interop.mace_torch_export import to_mace_torch
    from equiforce.models import load_model
    from equiforce.precision import MODES, apply_policy

    _require("mace.modules", "mace-torch", "make install-mace builds .venv-mace")
    potential = load_model(source)  # compared in plain float (mace-torch has no bf16 blocks)
    potential = apply_policy(potential, MODES[str(potential.dtype).removeprefix("torch.")])
    try:
        model = to_mace_torch(potential)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err
    reference = _mace_reference(model, potential)
    figures = _agreeing(potential, reference, f"{source}: mace-torch's copy disagrees with it")
    atomic_torch_save(model, out)
    return figures


def _nequip_allegro(source: str, head: str | None) -> tuple[Any, Reference]:
    """The converted nequip-allegro model of ``source`` and nequip's evaluation of it."""
    from ase.data import atomic_numbers

    from equiforce.interop.nequip_allegro import (
        from_nequip_allegro,
        nequip_global_state,
        nequip_inputs,
    )

    _require("allegro.nn", "nequip-allegro", "make install-nequip builds .venv-nequip")
    from nequip.model.saved_models.load_utils import load_saved_model

    if head is not None:
        raise ValueError(f"{source}: --head selects a head of a mace-torch model, not nequip's")
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source}: no such nequip checkpoint or package file")
    with nequip_global_state():
        try:
            models = load_saved_model(source, model_key=None)
        except Exception as err:  # nequip's own errors name neither the file nor the field
            raise ValueError(
                f"{source}: nequip could not load this {source_peer(source)} file: {err}"
            ) from err
    if list(models.keys()) != ["sole_model"]:
        raise ValueError(
            f"{source}: holds the models {', '.join(models.keys())}; equiforce converts "
            "files of one model"
        )
    model = models["sole_model"]
    species = _nequip_species(source, list(model.type_names))
    try:
        potential = from_nequip_allegro(model, species)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err
    foreign = [name for name in potential.type_names if name not in atomic_numbers]
    if foreign:
        raise ValueError(
            f"{source}: the model's type names {', '.join(foreign)} are not chemical symbols "
            "and the file does not map species to types (a package does not: convert the "
            "checkpoint it was built from); equiforce models type atoms by element"
        )

    def reference(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        from nequip.data import AtomicDataDict

        out = model(nequip_inputs(batch))
        return out[AtomicDataDict.TOTAL_ENERGY_KEY].reshape(-1), out[AtomicDataDict.FORCE_KEY]

    return potential, reference


def _nequip_species(source: str, type_names: list[str]) -> list[str] | None:
    """The chemical symbol of each of the model's ``type_names``, from the
    ``ChemicalSpeciesToAtomTypeMapper`` among a checkpoint's data transforms (None for
    packages, or when it has none).

    Raises:
        ValueError: the map is not one species per type (named).
    """
    if not source.endswith(".ckpt"):
        return None
    config = torch.load(source, map_location="cpu", weights_only=False)["hyper_parameters"]
    transforms = config["info_dict"].get("data", {}).get("transforms") or []
    for transform in transforms:
        mapping = transform.get("chemical_species_to_atom_type_map")
        if mapping is None:
            continue
        species = {name: [s for s, t in mapping.items() if t == name] for name in type_names}
        if any(len(symbols) != 1 for symbols in species.values()):
            raise ValueError(
                f"{source}: data.transforms maps species to types as {dict(mapping)}; "
                "equiforce converts models with one species per type"
            )
        return [species[name][0] for name in type_names]
    return None


_LOADERS: dict[str, Callable[[str, str | None], tuple[Any, Reference]]] = {
    "mace-torch": _mace_torch,
    "nequip-allegro": _nequip_allegro,
}


def _require(module: str, peer: str, hint: str) -> None:
    """Raise ``ImportError`` naming ``peer`` unless ``module`` imports."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{peer} is not installed here: equiforce convert reads {peer} model files "
            f"(pip install {peer} beside equiforce; {hint})"
        ) from err


def _agreeing(potential, reference: Reference, disagreement: str) -> list[dict[str, Any]]:
    """``_compare``'s figures when every structure agrees within ``TOLERANCES``.

    Raises:
        ConversionError: ``disagreement``, the tolerance and the figures.
    """
    from equiforce.export.build import format_validation

    figures = _compare(potential, reference)
    if not all(row["within_tolerance"] for row in figures):
        raise ConversionError(
            f"{disagreement} beyond {TOLERANCES[potential.dtype]} (atol, rtol); nothing "
            "written:\n" + format_validation(figures),
            figures,
        )
    return figures


def _compare(potential, reference: Reference) -> list[dict[str, Any]]:
    """Energies and forces of ``potential`` and of the peer's ``reference`` (module docstring)."""
    from equiforce.export.build import validation_structures
    from equiforce.export.package import atoms_batch

    atol, rtol = TOLERANCES[potential.dtype]
    figures = []
    for name, atoms in validation_structures(potential.type_names, potential).items():
        batch = atoms_batch(atoms, potential.type_names, potential.r_max, torch.device("cpu"))
        ours = potential(batch, compute_forces=True, create_graph=False)
        theirs = dict(zip((keys.ENERGY, keys.FORCES), reference(batch), strict=True))
        deviation, within = {}, True
        for key in (keys.ENERGY, keys.FORCES):
            want = theirs[key].detach().to(torch.float64)
            diff = (ours[key].detach() - want).abs()
            deviation[key] = float(diff.max())
            within &= bool((diff <= atol + rtol * want.abs()).all())
        figures.append(
            {
                "structure": name,
                "n_atoms": len(atoms),
                "n_edges": int(batch[keys.EDGE_INDEX].shape[1]),
                "max_abs_deviation": deviation,
                "within_tolerance": within,
            }
        )
    return figures

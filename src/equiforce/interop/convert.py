"""A mace-torch model file as an equiforce model file, checked against mace-torch before it is
written (``equiforce convert``).

The source is what mace-torch saves with ``torch.save`` (``mace_run_train``'s ``*.model``, the
foundation models its ``mace_mp`` downloads): a pickled ``MACE`` / ``ScaleShiftMACE``, loaded
here with ``torch.load(weights_only=False)``, so convert only files you trust, as mace-torch
itself loads them. It is converted by ``from_mace_torch`` (one head of a multi-head model),
then both models evaluate ``export.build.validation_structures`` of the model's species (a
molecule, a triclinic cell, a slab and a 64-atom cell), mace-torch with torch's default dtype
set to the model's (as its calculator does), and the file is written (``save_model``,
atomically) only when every energy and force agrees within ``TOLERANCES``; otherwise a
``ConversionError`` carries the figures and nothing is written. Needs mace-torch beside
equiforce (``make install-mace`` builds ``.venv-mace`` with both).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from equiforce.data import keys

__all__ = ["TOLERANCES", "ConversionError", "convert_mace_torch_file"]

# (atol, rtol) of energies (eV) and forces (eV/Å) against mace-torch, by parameter dtype
TOLERANCES = {torch.float64: (1e-8, 1e-8), torch.float32: (1e-4, 1e-4)}


class ConversionError(ValueError):
    """The converted model disagrees with the source; ``figures`` holds the comparison."""

    def __init__(self, message: str, figures: list[dict[str, Any]]):
        super().__init__(message)
        self.figures = figures


def convert_mace_torch_file(
    source: str | os.PathLike, out: str | os.PathLike, head: str | None = None
) -> list[dict[str, Any]]:
    """Convert the mace-torch model file ``source`` into the equiforce model file ``out``.

    Args:
        source: a ``torch.save``d mace-torch ``MACE``/``ScaleShiftMACE`` (module docstring).
        out: the equiforce model file to write (``save_model``).
        head: the head of a multi-head model (``from_mace_torch``).

    Returns:
        Per validation structure: name, atom and edge counts, max |ours - mace-torch| of the
        energy (eV) and forces (eV/Å), and whether they are within ``TOLERANCES``.

    Raises:
        ImportError: mace-torch is not installed here.
        ValueError: ``source`` is not a mace-torch model (named), uses an option equiforce
            does not implement, or ``head`` is wrong.
        ConversionError: the converted model disagrees with mace-torch (nothing written).
    """
    from equiforce.export.build import format_validation
    from equiforce.interop.mace_torch import from_mace_torch, head_index
    from equiforce.models import save_model

    try:
        import mace.modules  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "mace-torch is not installed here: equiforce convert reads mace-torch model files "
            "(pip install mace-torch beside equiforce; make install-mace builds .venv-mace)"
        ) from err
    model = torch.load(source, map_location="cpu", weights_only=False)
    if isinstance(model, torch.jit.ScriptModule) or not isinstance(model, torch.nn.Module):
        kind = "a TorchScript module" if isinstance(model, torch.jit.ScriptModule) else type(model)
        raise ValueError(
            f"{source}: holds {kind}, not a mace-torch model module (a TorchScript/LAMMPS "
            "export cannot be converted: use the .model file training wrote)"
        )
    potential = from_mace_torch(model, head)
    figures = _compare(model, potential, head_index(model, head))
    if not all(row["within_tolerance"] for row in figures):
        raise ConversionError(
            f"{source}: the converted model disagrees with mace-torch beyond "
            f"{TOLERANCES[potential.dtype]} (atol, rtol); nothing written:\n"
            + format_validation(figures),
            figures,
        )
    save_model(potential, out)
    return figures


def _compare(model: torch.nn.Module, potential, head: int) -> list[dict[str, Any]]:
    """Energies and forces of ``potential`` and of mace-torch's ``model`` (module docstring)."""
    from equiforce.export.build import validation_structures
    from equiforce.export.package import atoms_batch
    from equiforce.interop.mace_torch import mace_inputs

    atol, rtol = TOLERANCES[potential.dtype]
    dtype = potential.dtype
    figures = []
    for name, atoms in validation_structures(potential.type_names).items():
        batch = atoms_batch(atoms, potential.type_names, potential.r_max, torch.device("cpu"))
        ours = potential(batch, compute_forces=True, create_graph=False)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            inputs = mace_inputs(batch, len(potential.type_names), dtype, head)
            theirs = model(inputs, compute_force=True)
        finally:
            torch.set_default_dtype(previous)
        deviation, within = {}, True
        for key, their_key in ((keys.ENERGY, "energy"), (keys.FORCES, "forces")):
            want = theirs[their_key].detach().to(torch.float64)
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

"""A model's predictions written into the frames of an extended XYZ file (``equiforce
evaluate --predictions``, as mace-torch's ``mace_eval_configs``).

``PredictionWriter`` is a sink of ``evaluate_files``: it receives each batch's structures and
predictions in file order, reads the same frames again from the file (every ``info`` and
``arrays`` entry kept, labels included), adds the predictions under ``PREFIX`` keys and appends
them to a binary handle (``equiforce.files.atomic_writer``: the output appears whole or not at
all). Only one batch of frames is held, so a file larger than memory can be written.

Keys: ``equiforce_energy`` (``info``, eV), ``equiforce_forces`` (``arrays``, (n_atoms, 3)
eV/Å), ``equiforce_energies`` (``arrays``, (n_atoms,) eV: each atom's energy, summing to the
energy; where the model gives them) and, for 3D-periodic frames where the stress was
predicted, ``equiforce_stress`` (``info``, Voigt (xx, yy, zz, yz, xz, xy), eV/Å^3, ASE
sign).
"""

from __future__ import annotations

import io
import os
from typing import IO, Sequence

import numpy as np

from equiforce.train.evaluate import Predictions, Structure

PREFIX = "equiforce_"


class PredictionWriter:
    """Appends the frames of ``source`` with their predictions to ``handle`` (module
    docstring); call it with each batch, in order.

    Args:
        source: the extxyz file the evaluated structures were read from (all its frames).
        handle: binary handle of the output file.
    """

    def __init__(self, source: str | os.PathLike, handle: IO[bytes]):
        import ase.io

        self._source = source
        self._frames = ase.io.iread(str(source), index=":", format="extxyz")
        self._handle = handle
        self.n_frames = 0

    def __call__(self, structures: Sequence[Structure], pred: Predictions) -> None:
        """Write the frames of ``structures`` (the file's next ones) with ``pred``."""
        import ase.io
        from ase.stress import full_3x3_to_voigt_6_stress

        offsets = np.concatenate([[0], np.cumsum(pred.n_atoms)])
        for k in range(len(structures)):
            frame = next(self._frames)
            if len(frame) != pred.n_atoms[k]:  # the file changed while it was evaluated
                raise ValueError(
                    f"{self._source}, frame {self.n_frames}: {len(frame)} atoms, the "
                    f"evaluated structure had {pred.n_atoms[k]}"
                )
            frame.info[PREFIX + "energy"] = float(pred.energy[k])
            atoms = slice(offsets[k], offsets[k + 1])
            frame.arrays[PREFIX + "forces"] = pred.forces[atoms].copy()
            if pred.node_energy is not None:
                frame.arrays[PREFIX + "energies"] = pred.node_energy[atoms].copy()
            if pred.stress is not None and frame.pbc.all():
                stress = full_3x3_to_voigt_6_stress(pred.stress[k])
                frame.info[PREFIX + "stress"] = np.asarray(stress, dtype=np.float64)
            text = io.StringIO()
            ase.io.write(text, frame, format="extxyz")
            self._handle.write(text.getvalue().encode("utf-8"))
            self.n_frames += 1

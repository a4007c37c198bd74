"""The reader, datasets and statistics on the real AcAc files (skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest

from equiforce.data import (
    compute_statistics,
    load_train_validation,
    read_configurations,
    read_isolated_atom_energies,
)

from .conftest import SHARED_DATA

ACAC = SHARED_DATA / "acac"
pytestmark = pytest.mark.skipif(
    not (ACAC / "train_300K.xyz").is_file(), reason="shared AcAc data not available"
)


def test_acac_frames_read_with_labels_and_no_cell():
    configs = read_configurations(ACAC / "train_300K.xyz", index=":50", require_forces=True)
    assert len(configs) == 50
    assert all(c.n_atoms == 15 and c.energy is not None for c in configs)
    assert all(not c.pbc.any() and not c.cell.any() for c in configs)


def test_acac_statistics_with_isolated_atoms():
    isolated = read_isolated_atom_energies(ACAC / "isolated_atoms.xyz")
    assert sorted(isolated) == ["C", "H", "O"]
    train, valid = load_train_validation(
        ACAC / "train_300K.xyz", 5.0, valid_fraction=0.1, seed=0
    )
    assert (len(train), len(valid)) == (450, 50)
    stats = compute_statistics(train, 5.0, isolated_atoms=isolated)
    assert stats.type_names == ("H", "C", "O")
    # C5H8O2 binds by a few eV per atom; forces of a 300 K MD are around 1 eV/Å.
    assert -6.0 < stats.mean_interaction_energy < -3.0
    assert 0.5 < stats.force_rms < 2.0
    assert 10.0 < stats.avg_num_neighbors < 14.0
    assert np.isfinite(stats.atomic_energies).all()

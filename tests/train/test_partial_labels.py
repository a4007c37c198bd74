"""Partial labels: frames without forces, without stress or with the energy only.

They are read (malformed labels still raise, naming file, frame and field), the statistics use
only the frames that carry each label, the masked loss terms give no gradient, and the metrics
average over labelled entries only.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.dataset import load_dataset
from equiforce.data.extxyz import DataError, read_configurations
from equiforce.data.statistics import compute_statistics
from equiforce.testing.structures import emt_labelled, make_fcc_cu
from equiforce.testing.tolerances import TOL
from equiforce.train.config import ModelConfig
from equiforce.train.losses import ForcesLoss, StressLoss
from equiforce.train.metrics import ErrorAccumulator, read_metrics_csv
from equiforce.train.run import train
from equiforce.train.setup import build_model_from_config

from .conftest import TINY_MACE, make_config

R_MAX = 4.0
KINDS = {
    "no_stress": ("energy", "forces"),
    "no_forces": ("energy", "stress"),
    "energy_only": ("energy",),
    "forces_only": ("forces",),
}


def labelled(seed: int, keep: tuple[str, ...] = ("energy", "forces", "stress")):
    """A rattled 4-atom Cu/Au cell carrying only the EMT labels in ``keep``."""
    atoms = emt_labelled(make_fcc_cu(repeat=1, seed=seed, rattle=0.1, au_fraction=0.5))
    results = {k: v for k, v in atoms.calc.results.items() if k in keep}
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


@pytest.fixture(scope="module")
def mixed_file(tmp_path_factory):
    """16 frames: 8 fully labelled, then 2 of each partial kind."""
    frames = [labelled(seed) for seed in range(8)]
    for k, kind in enumerate(KINDS):
        frames += [labelled(20 + 2 * k + j, KINDS[kind]) for j in (0, 1)]
    path = tmp_path_factory.mktemp("partial") / "mixed.xyz"
    write(path, frames, format="extxyz")
    return path


@pytest.fixture(scope="module")
def mixed(mixed_file):
    return load_dataset(
        mixed_file, R_MAX, require_energy=False, require_forces=False, require_label=True
    )


def _flags(graph) -> tuple[bool, bool, bool]:
    return tuple(bool(graph[k]) for k in (keys.HAS_ENERGY, keys.HAS_FORCES, keys.HAS_STRESS))


def test_partial_frames_are_read_with_their_masks(mixed):
    expected = [(True, True, True)] * 8
    for kind in KINDS.values():
        flags = ("energy" in kind, "forces" in kind, "stress" in kind)
        expected += [flags, flags]
    assert [_flags(g) for g in mixed.graphs] == expected


def test_a_frame_without_any_label_is_an_error_naming_file_and_frame(tmp_path):
    path = tmp_path / "unlabelled.xyz"
    write(path, [labelled(0), labelled(1, keep=())], format="extxyz")
    with pytest.raises(DataError, match=r"unlabelled.xyz, frame 1: no label: none of the keys"):
        read_configurations(path, require_label=True)
    assert len(read_configurations(path)) == 2  # allowed where labels are optional


_GOOD = "Cu 0.0 0.0 0.0 0.1 0.2 0.3\nCu 2.5 0.0 0.0 -0.1 -0.2 -0.3\n"
_HEADER = 'Properties=species:S:1:pos:R:3:forces:R:{n} energy={energy} pbc="F F F"\n'
MALFORMED = {
    "forces of the wrong shape": (
        "2\n" + _HEADER.format(n=2, energy=-1.0) + "Cu 0 0 0 0.1 0.2\nCu 2.5 0 0 0.1 0.2\n",
        r"frame 1: field 'forces' must have shape \(2, 3\), got \(2, 2\)",
    ),
    "NaN forces": (
        "2\n" + _HEADER.format(n=3, energy=-1.0) + "Cu 0 0 0 0.1 nan 0.3\nCu 2.5 0 0 0 0 0\n",
        r"frame 1: field 'forces' contains NaN or inf",
    ),
    "NaN energy": (
        "2\n" + _HEADER.format(n=3, energy="nan") + _GOOD,
        r"frame 1: field 'energy' contains NaN or inf",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_labels_name_file_frame_and_field(tmp_path, case):
    text, message = MALFORMED[case]
    path = tmp_path / "bad.xyz"
    path.write_text("2\n" + _HEADER.format(n=3, energy=-1.0) + _GOOD + text)
    with pytest.raises(DataError, match=r"bad.xyz, " + message):
        read_configurations(path, require_label=True)


def test_statistics_use_only_the_frames_carrying_each_label(mixed):
    def subset(flag):
        return mixed.subset([k for k, g in enumerate(mixed.graphs) if bool(g[flag])])

    names = mixed.type_names
    stats = compute_statistics(mixed, R_MAX)
    with_energy = compute_statistics(subset(keys.HAS_ENERGY), R_MAX, names)
    np.testing.assert_allclose(stats.atomic_energies, with_energy.atomic_energies, **vars(TOL.fp64))
    assert stats.mean_interaction_energy == pytest.approx(with_energy.mean_interaction_energy)
    with_forces = compute_statistics(subset(keys.HAS_FORCES), R_MAX, names)
    assert stats.force_rms == pytest.approx(with_forces.force_rms, rel=TOL.fp64.rtol)
    forces = np.concatenate(
        [g[keys.FORCES].numpy() for g in mixed.graphs if bool(g[keys.HAS_FORCES])]
    )
    assert stats.force_rms == pytest.approx(math.sqrt(np.mean(forces**2)), rel=TOL.fp64.rtol)


@pytest.fixture(scope="module")
def model(mixed):
    config = ModelConfig(
        family="mace", params={k: v for k, v in TINY_MACE.items() if k != "family"}
    )
    return build_model_from_config(config, compute_statistics(mixed, R_MAX), seed=0)


def _gradient(model, loss) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in model.parameters()
        ]
    )


@pytest.mark.parametrize(
    ("term", "flag"), [(ForcesLoss(), keys.HAS_FORCES), (StressLoss(), keys.HAS_STRESS)]
)
def test_masked_terms_give_no_gradient(model, mixed, term, flag):
    unlabelled = [g for g in mixed.graphs if not bool(g[flag])]
    labelled_graphs = [g for g in mixed.graphs if bool(g[flag])][:3]
    batch = collate(unlabelled)
    pred = model(batch, compute_forces=True, compute_stress=True)
    assert float(term(batch, pred).detach()) == 0.0
    assert float(_gradient(model, term(batch, pred)).abs().max()) == 0.0
    # in a mixed batch, the unlabelled frames add nothing: same summed error and gradient
    mixed_batch = collate(labelled_graphs + unlabelled)
    alone = collate(labelled_graphs)
    sums = []
    for b in (mixed_batch, alone):
        pred = model(b, compute_forces=True, compute_stress=True)
        error_sum = term.errors(b, pred).sum()
        sums.append((float(error_sum.detach()), _gradient(model, error_sum)))
    assert sums[0][0] == pytest.approx(sums[1][0], rel=TOL.fp64.rtol)
    torch.testing.assert_close(sums[0][1], sums[1][1], **vars(TOL.fp64_grad))


def test_metrics_average_over_labelled_entries_only(mixed):
    batch = collate(mixed.graphs)
    n_atoms = batch[keys.N_ATOMS].to(torch.float64)
    offset = torch.arange(1, len(mixed) + 1, dtype=torch.float64)  # eV per atom, per graph
    pred = {
        keys.ENERGY: batch[keys.ENERGY] + offset * n_atoms,
        keys.FORCES: batch[keys.FORCES] + 0.01 * offset[batch[keys.BATCH]][:, None],
        keys.STRESS: batch[keys.STRESS] + 0.001 * offset[:, None, None],
    }
    accumulator = ErrorAccumulator()
    accumulator.add(batch, pred)
    metrics = accumulator.metrics("valid")
    has = {f: batch[f].numpy() for f in (keys.HAS_ENERGY, keys.HAS_FORCES, keys.HAS_STRESS)}
    milli = 1000.0 * offset.numpy()
    expected = {
        "energy": math.sqrt(np.mean(milli[has[keys.HAS_ENERGY]] ** 2)),
        "forces": math.sqrt(np.mean((0.01 * milli[has[keys.HAS_FORCES]]) ** 2)),
        "stress": math.sqrt(np.mean((0.001 * milli[has[keys.HAS_STRESS]]) ** 2)),
    }
    for quantity, rmse in expected.items():
        assert metrics[f"valid_{quantity}_rmse"] == pytest.approx(rmse, rel=TOL.fp64.rtol)


def test_a_run_trains_on_partial_labels(tmp_path, mixed_file):
    config = make_config(tmp_path / "run", mixed_file, max_epochs=2, stage_two={"enabled": False})
    result = train(config)
    rows = read_metrics_csv(result.metrics_csv)
    assert len(rows) == 2
    for name in ("train_loss", "valid_loss", "train_energy_rmse", "train_forces_rmse"):
        assert all(math.isfinite(row[name]) for row in rows), name

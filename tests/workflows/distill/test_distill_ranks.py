"""``torchrun -m equiforce distill`` on 2 CPU ranks: the teacher's work shared out gives the
one rank's student files, and the student (feature and Hessian matching included) trains to
the one rank's weights; rank 0 alone reports."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from ase.io import read

from equiforce.models.io import save_model
from equiforce.testing.models import tiny_mace
from equiforce.testing.tolerances import TOL
from equiforce.testing.torchrun import torchrun_equiforce
from equiforce.train.checkpoint import load_checkpoint
from equiforce.workflows.distill.config import DistillConfig
from equiforce.workflows.distill.run import distill
from equiforce.workflows.distill.store import RecordStore
from tests.workflows.distill.conftest import distill_dict


def _assert_close(actual: dict, expected: dict, what: str) -> None:
    assert actual.keys() == expected.keys(), what
    for name, value in expected.items():
        scale = max(float(value.abs().max()), 1.0)
        assert torch.allclose(
            actual[name], value, rtol=TOL.fp64.rtol, atol=TOL.fp64.atol * scale
        ), f"{what}: {name}"


def test_two_ranks_distil_the_student_of_one_rank(tmp_path, emt_files):
    teacher = save_model(tiny_mace(), tmp_path / "teacher.pt")

    def values(name: str) -> dict:
        return distill_dict(
            tmp_path / name,
            emt_files,
            teacher={"model": str(teacher)},
            augment={
                "rattle": {"scales": [0.03], "copies": 1},
                "md": {"temperatures": [300.0], "n_starts": 2, "n_snapshots": 2, "interval": 3},
                "normal_modes": {"n_starts": 1, "n_samples": 2},
            },
            losses={"feature_weight": 0.5, "hessian_weight": 0.1, "hessian_structures": 5},
            training={"max_epochs": 2, "progress_bar": False},
        )

    run_file = tmp_path / "two.yaml"
    run_file.write_text(yaml.safe_dump(values("two")))
    done = torchrun_equiforce("distill", str(run_file))
    assert done.stdout.count("report: ") == 1, "rank 1 must print nothing"
    assert "2 ranks (gloo" in done.stderr

    one = distill(DistillConfig.from_dict(values("one")), progress=False)
    for name in ("train.xyz", "valid.xyz"):  # the same structures (MD, modes) and labels
        two = read(tmp_path / "two" / "data" / name, ":")
        ones = read(tmp_path / "one" / "data" / name, ":")
        assert len(two) == len(ones) == (36 if name == "train.xyz" else 3)
        for a, b in zip(two, ones, strict=True):  # labelled in other chunks: rounding apart
            assert np.array_equal(a.positions, b.positions) and a.info == b.info
            assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-12)
            np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=0, atol=1e-12)
            np.testing.assert_allclose(a.get_stress(), b.get_stress(), rtol=0, atol=1e-12)
    shared = RecordStore(next((tmp_path / "two" / "teacher_labels").glob("hvp-*")))
    sizes = sorted(len(np.load(c)["keys"]) for c in shared.directory.glob("chunk-*.npz"))
    assert len(shared) == 5 and sizes == [2, 3]  # one rank alone writes chunks of 4 and 1
    expected = load_checkpoint(one.output_dir / "students" / "student" / "checkpoints" / "last.pt")
    actual = load_checkpoint(tmp_path / "two" / "students" / "student" / "checkpoints" / "last.pt")
    assert actual["world_size"] == 2 and expected["world_size"] == 1
    _assert_close(actual["train_state_dict"], expected["train_state_dict"], "weights")
    _assert_close(actual["auxiliary"], expected["auxiliary"], "feature map")
    assert (tmp_path / "two" / "report.json").exists()

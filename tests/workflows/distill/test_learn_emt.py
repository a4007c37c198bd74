"""An analytic teacher (EMT) is learned by a tiny student to a stated force error."""

from __future__ import annotations

import numpy as np
import pytest
from ase.io import write

from equiforce.testing.structures import emt_labelled, make_fcc_cu
from equiforce.workflows.distill.config import DistillConfig
from equiforce.workflows.distill.run import distill
from tests.workflows.distill.conftest import distill_dict


def test_tiny_student_learns_the_emt_teacher(tmp_path):
    """Tiny student learns the emt teacher."""
    frames = [
        emt_labelled(make_fcc_cu(repeat=1, seed=s, rattle=0.1, au_fraction=0.0)) for s in range(17)
    ]
    files = {name: tmp_path / f"{name}.xyz" for name in ("train", "valid", "test")}
    write(files["train"], frames[:10])
    write(files["valid"], frames[10:13])
    write(files["test"], frames[13:])
    values = distill_dict(
        tmp_path / "out",
        files,
        augment={"rattle": {"scales": [0.05, 0.1], "copies": 2}, "md": {"temperatures": []}},
        losses={"ground_truth_weight": 0.0},
        training={"max_epochs": 12, "progress_bar": False, "stress_weight": 0.0},
    )
    result = distill(DistillConfig.from_dict(values), progress=False)
    teacher, student = result.rows
    force_rms = 1e3 * np.sqrt(np.mean(np.concatenate([a.get_forces() for a in frames[13:]]) ** 2))
    # EMT is the ground truth here, so the teacher is exact and agreement equals test error.
    assert teacher["test_forces_rmse"] < 1e-3
    assert student["teacher_forces_rmse"] == pytest.approx(student["test_forces_rmse"], rel=1e-3)
    # Stated error: test force RMSE below 6% of the test force RMS (~930 meV/Å).
    assert student["test_forces_rmse"] < 0.06 * force_rms
    assert result.counts["rattle"] == 40 and result.counts["train_frames"] == 50
    assert (tmp_path / "out" / "report.md").exists()
    assert student["ms_per_call"] > 0 and student["n_parameters"] > 0

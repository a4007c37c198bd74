"""Matching targets reach the batches, exact resume with them, resume checks, CLI errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from equiforce.cli.main import main
from equiforce.data.dataset import load_dataset, make_loader
from equiforce.data.extxyz import read_configurations
from equiforce.models.io import save_model
from equiforce.testing.models import tiny_mace
from equiforce.train.checkpoint import load_checkpoint
from equiforce.train.config import RunConfig
from equiforce.train.run import train
from equiforce.train.setup import key_spec
from equiforce.workflows.distill.config import DistillConfig
from equiforce.workflows.distill.data import configuration_to_atoms, read_structures
from equiforce.workflows.distill.prepare import prepare_student_data
from equiforce.workflows.distill.run import SETTINGS_FILE, _auxiliary_factory, distill
from equiforce.workflows.distill.teacher import load_teacher
from tests.workflows.distill.conftest import distill_dict


def _prepared(tmp_path, emt_files, teacher_model=True):
    path = save_model(tiny_mace(), tmp_path / "teacher.pt")
    values = distill_dict(
        tmp_path / "out",
        emt_files,
        teacher={"model": str(path)}
        if teacher_model
        else {"calculator": "ase.calculators.emt:EMT"},
        losses={"feature_weight": 0.5, "hessian_weight": 0.1, "hessian_structures": 6},
        training={"max_epochs": 2, "progress_bar": False},
    )
    config = DistillConfig.from_dict(values)
    train_set, valid_set = read_structures(config.data, config.seed)
    teacher = load_teacher(config.teacher, configuration_to_atoms(train_set[0]))
    return config, prepare_student_data(config, teacher, train_set, valid_set, progress=False)


def test_matching_targets_are_found_for_every_teacher_frame(tmp_path, emt_files):
    """Matching targets are found for every teacher frame."""
    config, data = _prepared(tmp_path, emt_files)
    n_teacher = data.counts["train"] + data.counts["rattle"] + data.counts["md"]
    assert len(data.targets) == n_teacher
    assert sum("hvp" in r for r in data.targets.values()) == 6
    model = tiny_mace()
    loss = _auxiliary_factory(config, data)(model)
    dataset = load_dataset(data.train_file, model.r_max, model.type_names, key_spec(config.data))
    found = sum(len(loss._lookup(batch)) for batch in make_loader(dataset, 4, shuffle=False))
    # ground-truth copies share the geometry (and targets) of the original structures
    assert found == n_teacher + data.counts["train"]


def test_student_with_matching_terms_resumes_exactly(tmp_path, emt_files):
    """Student with matching terms resumes exactly."""
    config, data = _prepared(tmp_path, emt_files)
    factory = _auxiliary_factory(config, data)

    def run(name, epochs, resume=False):
        run_config = RunConfig.from_dict(
            {
                "output_dir": str(tmp_path / name),
                "data": {
                    "train_file": str(data.train_file),
                    "valid_file": str(data.valid_file),
                    "batch_size": 4,
                },
                "model": config.student.to_dict(),
                "training": {"max_epochs": epochs, "progress_bar": False},
            }
        )
        return train(run_config, resume=resume, auxiliary=factory)

    straight = run("straight", 2)
    run("resumed", 1)
    resumed = run("resumed", 2, resume=True)
    a, b = load_checkpoint(straight.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    for name in ("train_state_dict", "auxiliary"):
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), (name, key)
    assert "feature_map.weight" in a["auxiliary"]


def test_cli_reports_a_bad_teacher_and_a_sweep_without_students(tmp_path, emt_files, capsys):
    """Cli reports a bad teacher and a sweep without students."""
    import yaml

    values = distill_dict(tmp_path / "out", emt_files, teacher={"calculator": "nope_mod:Calc"})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    assert main(["distill", str(path)]) == 2
    assert "cannot import 'nope_mod'" in capsys.readouterr().err
    values = distill_dict(tmp_path / "out", emt_files)
    path.write_text(yaml.safe_dump(values))
    assert main(["distill", str(path), "--sweep"]) == 2
    assert "sweep.students" in capsys.readouterr().err


def test_resume_refuses_changed_distillation_settings(tmp_path, emt_files):
    """Resume refuses changed distillation settings and reuses an unchanged student."""
    values = distill_dict(tmp_path / "out", emt_files)
    first = distill(DistillConfig.from_dict(values), progress=False)
    settings_file = tmp_path / "out" / "students" / "student" / SETTINGS_FILE
    assert json.loads(settings_file.read_text())["losses"]["teacher_weight"] == 1.0
    again = distill(DistillConfig.from_dict(values), resume=True, progress=False)
    # the reused student row is the stored one (the teacher is timed afresh: speed-up differs)
    assert {k: v for k, v in again.rows[1].items() if k != "speedup"} == {
        k: v for k, v in first.rows[1].items() if k != "speedup"
    }
    changed = dict(values, losses={"teacher_weight": 0.5})
    with pytest.raises(ValueError, match=r"student student: cannot resume.*losses.teacher_weight"):
        distill(DistillConfig.from_dict(changed), resume=True, progress=False)


@pytest.mark.parametrize("source", ["ground_truth", "teacher"])
def test_validation_file_holds_each_structure_once_with_the_chosen_labels(
    tmp_path, emt_files, source
):
    """The tiny MACE teacher's labels differ from the EMT ground truth, so the source shows."""
    path = save_model(tiny_mace(), tmp_path / "teacher.pt")
    values = distill_dict(
        tmp_path / "out",
        emt_files,
        teacher={"model": str(path)},
        losses={"validation_labels": source},
    )
    config = DistillConfig.from_dict(values)
    train_set, valid_set = read_structures(config.data, config.seed)
    valid_set[-1] = dataclasses.replace(valid_set[-1], energy=None, forces=None)  # unlabelled
    teacher = load_teacher(config.teacher, configuration_to_atoms(train_set[0]))
    data = prepare_student_data(config, teacher, train_set, valid_set, progress=False)
    written = read_configurations(data.valid_file, key_spec(config.data))
    assert len(written) == len(valid_set) == data.counts["valid_frames"]
    teacher_labels = teacher.label([configuration_to_atoms(c) for c in valid_set])
    rows = zip(written, valid_set, teacher_labels, strict=True)
    for k, (frame, original, labels) in enumerate(rows):
        np.testing.assert_allclose(frame.positions, original.positions, atol=1e-8)
        assert frame.weight == 1.0
        from_truth = source == "ground_truth" and k < len(valid_set) - 1
        expected = original if from_truth else labels
        energy, forces = expected.energy, expected.forces
        assert abs(frame.energy - energy) < 1e-6
        np.testing.assert_allclose(frame.forces, forces, atol=1e-6)
        assert abs(frame.energy - labels.energy) > 1e-3 or not from_truth

"""The distillation config: example file, unknown keys and invalid values name their key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from equiforce.typed_config import ConfigError
from equiforce.workflows.distill.config import DistillConfig, load_distill_config
from tests.workflows.distill.conftest import distill_dict

EXAMPLE = Path(__file__).resolve().parents[3] / "configs" / "distill_example.yaml"


def test_example_config_parses_with_documented_defaults():
    """Example config parses with documented defaults."""
    config = load_distill_config(EXAMPLE)
    assert config.teacher.calculator == "ase.calculators.emt:EMT"
    assert config.data.train_file == "quickstart_out/data/train.xyz"
    assert len(config.sweep.students) == 3
    assert config.student_variant(config.sweep.students[2]).params["max_L"] == 1
    assert config.losses.validation_labels == "ground_truth"


@pytest.mark.parametrize(
    ("section", "value", "path"),
    [
        ("augment", {"md": {"temprature": 300}}, "augment.md.temprature"),
        ("losses", {"hessian_wieght": 1.0}, "losses.hessian_wieght"),
        ("student", {"family": "mace", "num_chanels": 8}, "student.num_chanels"),
        ("sweep", {"students": [{"num_chanels": 8}]}, "sweep.students[0]"),
        ("augment", {"rattle": {"scales": [-0.1]}}, "augment.rattle.scales"),
        ("losses", {"validation_labels": "dft"}, "losses.validation_labels"),
        ("report", {"compile": True, "warmup_calls": 0}, "report.warmup_calls"),
        ("teacher", {"model": "a.pt", "calculator": "ase.calculators.emt:EMT"}, "teacher"),
        ("teacher", {"calculator": "ase.calculators.emt"}, "teacher.calculator"),
    ],
)
def test_invalid_entries_name_their_key_path(tmp_path, section, value, path):
    """Invalid entries name their key path."""
    values = distill_dict(tmp_path, {"train": "t.xyz", "valid": "v.xyz", "test": "x.xyz"})
    values[section] = value
    with pytest.raises(ConfigError, match=path.replace("[", r"\[").replace("]", r"\]")):
        DistillConfig.from_dict(values)


def test_feature_matching_requires_an_equiforce_teacher(tmp_path):
    """Feature matching requires an equiforce teacher."""
    values = distill_dict(tmp_path, {"train": "t.xyz", "valid": "v.xyz", "test": "x.xyz"})
    values["losses"] = {"feature_weight": 1.0}
    with pytest.raises(ConfigError, match="losses.feature_weight"):
        DistillConfig.from_dict(values)

"""Precision policies, the named modes and the ``precision`` section of a run config."""

from __future__ import annotations

import pytest
import torch

from equiforce.precision import MODES, PrecisionPolicy, from_name
from equiforce.train.config import RunConfig
from equiforce.typed_config import ConfigError


def test_named_modes_have_the_documented_settings():
    assert set(MODES) == {"float64", "float32", "tf32", "bf16-mixed", "fp16-mixed"}
    assert MODES["float64"].torch_dtype == torch.float64
    assert MODES["tf32"].float32_matmul_precision == "high"
    assert MODES["bf16-mixed"].autocast_dtype == torch.bfloat16
    assert MODES["fp16-mixed"].autocast_dtype == torch.float16
    assert [m.needs_loss_scaling for m in MODES.values()] == [False] * 4 + [True]
    assert all(m.name == name for name, m in MODES.items())


def test_from_name_overrides_the_autocast_op_classes():
    policy = from_name("bf16-mixed", ("linear", "tensor_product"))
    assert policy.autocast_ops == ("linear", "tensor_product")
    assert policy.autocast == "bf16"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_dtype": "float16"}, "model_dtype"),
        ({"matmul": "tf32"}, "float32"),  # tf32 on float64 weights does nothing
        ({"model_dtype": "float32", "autocast": "bf16"}, "op class"),
        ({"model_dtype": "float32", "autocast": "bf16", "autocast_ops": ("conv",)}, "unknown"),
        ({"autocast_ops": ("linear",)}, "needs autocast"),
    ],
)
def test_inconsistent_policies_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PrecisionPolicy("custom", **kwargs)


def test_unknown_mode_names_the_known_ones():
    with pytest.raises(ValueError, match="bf16-mixed"):
        from_name("bf8")


def _run(**precision) -> dict:
    return {
        "output_dir": "out",
        "data": {"train_file": "train.xyz"},
        "model": {"family": "mace", "num_channels": 8},
        "precision": precision,
    }


def test_precision_section_round_trips_and_builds_the_policy():
    config = RunConfig.from_dict(_run(mode="bf16-mixed", autocast_ops=["linear"]))
    assert config.precision.policy() == from_name("bf16-mixed", ("linear",))
    assert RunConfig.from_dict(config.to_dict()) == config
    assert RunConfig.from_dict(_run()).precision.policy() is None


@pytest.mark.parametrize(
    ("precision", "model_dtype", "path"),
    [
        ({"mode": "half"}, None, "precision.mode"),
        ({"mode": "bf16-mixed", "autocast_ops": ["conv"]}, None, "precision.autocast_ops"),
        ({"autocast_ops": ["linear"]}, None, "precision.autocast_ops"),
        ({"mode": "float32", "loss_scale_init": 0}, None, "precision.loss_scale_init"),
        ({"mode": "bf16-mixed"}, "float64", "model.dtype"),
    ],
)
def test_bad_precision_sections_name_the_key(precision, model_dtype, path):
    values = _run(**precision)
    if model_dtype is not None:
        values["model"]["dtype"] = model_dtype
    with pytest.raises(ConfigError, match=path):
        RunConfig.from_dict(values)

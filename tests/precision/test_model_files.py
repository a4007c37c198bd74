"""The precision policy travels in model files: saved, restored on load, overridable."""

from __future__ import annotations

import pytest
import torch

from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.models import load_model, save_model
from equiforce.models.io import model_payload
from equiforce.precision import MODES, apply_policy, current_policy, from_name, op_class
from equiforce.testing.models import tiny_allegro, tiny_mace
from equiforce.testing.structures import make_molecule


def _forces(model) -> torch.Tensor:
    config = atoms_to_configuration(make_molecule())
    batch = collate([configuration_to_graph(config, model.type_names, model.r_max)])
    return model(batch)[keys.FORCES].detach()


def _math_dtypes(model) -> dict:
    return {n: m.math_dtype for n, m in model.named_modules() if op_class(m) is not None}


@pytest.mark.parametrize("build", [tiny_mace, tiny_allegro], ids=["mace", "allegro"])
def test_a_saved_policy_is_restored_on_load(tmp_path, build):
    policy = from_name("bf16-mixed", ("mlp", "tensor_product"))
    model = apply_policy(build(), policy)
    save_model(model, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    assert current_policy(loaded) == policy
    assert _math_dtypes(loaded) == _math_dtypes(model)
    assert torch.bfloat16 in _math_dtypes(loaded).values()
    assert torch.equal(_forces(loaded), _forces(model))


def test_an_explicit_precision_overrides_the_saved_policy(tmp_path):
    save_model(apply_policy(tiny_mace(), from_name("bf16-mixed")), tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt", precision="float32")
    assert current_policy(loaded) == MODES["float32"]
    assert set(_math_dtypes(loaded).values()) == {None}
    plain = apply_policy(tiny_mace(), MODES["float32"])
    assert torch.equal(_forces(loaded), _forces(plain))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_a_file_written_before_policies_were_saved_loads_as_plain_float(tmp_path, dtype):
    model = tiny_mace(dtype)
    payload = model_payload(model)
    del payload["precision"]  # the format as written before
    torch.save(payload, tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt")
    assert current_policy(loaded) is None
    assert loaded.dtype == dtype and set(_math_dtypes(loaded).values()) == {None}
    assert torch.equal(_forces(loaded), _forces(model))


def test_a_broken_saved_policy_is_reported(tmp_path):
    payload = model_payload(tiny_mace())
    payload["precision"] = {"name": "bf16-mixed", "model_dtype": "float64", "autocast": "bf16"}
    torch.save(payload, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="broken.pt: broken precision policy"):
        load_model(tmp_path / "broken.pt")

"""Fine-tuning: named parts, freezing, a learning rate per part, the foundation architecture.

The starting point is a random model of the MACE foundation architecture (128x0e+128x1o,
2 interactions: the ``mace-128-l1`` preset, what ``interop.mace_torch.from_mace_torch`` gives
for a MACE-MP model) saved as a model file; the run's model section gives only the family.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from ase.io import write

from equiforce.models import load_model, presets, registry, save_model
from equiforce.testing.structures import emt_labelled, make_fcc_cu
from equiforce.train.config import FinetuneConfig, ModelConfig, RunConfig, TrainConfig
from equiforce.train.finetune import apply_freeze, model_parts
from equiforce.train.optim import TrainingSchedule, build_optimizer
from equiforce.train.run import train

from .conftest import TINY_MODELS, config_dict


def _preset_model(name: str, type_names=("Cu", "Au"), dtype: str = "float64"):
    family, fields, _ = presets.PRESETS[name]
    fam = registry.family(family)
    values = {**fields, "type_names": type_names, "dtype": dtype}
    values["atomic_energies"] = (-0.1,) * len(type_names)
    spec = registry.spec_from_dict(fam.spec_type, values)
    return registry.build_model(family, spec).to(getattr(torch, dtype))


def _tiny_model(family: str):
    params = {k: v for k, v in TINY_MODELS[family].items() if k != "family"}
    spec = ModelConfig(family=family, params=params).spec()
    spec = dataclasses.replace(spec, type_names=("Cu", "Au"), atomic_energies=(0.0, 0.0))
    return registry.build_model(family, spec).to(torch.float64)


@pytest.mark.parametrize("name", ["mace-128-l1", "mace-tiny", "allegro-small", "allegro-tiny"])
def test_every_parameter_is_in_exactly_one_part(name):
    model = _preset_model(name)
    parts = model_parts(model)
    n_layers = model.energy_model.num_layers
    assert list(parts) == ["embeddings", *(f"layer_{k}" for k in range(n_layers)), "readouts"]
    names = [n for members in parts.values() for n, _ in members]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert all(parts[part] for part in parts)  # no empty part


def test_a_charge_aware_mace_has_its_state_embedding_in_the_parts():
    """The charge and spin embedding (``embedding_specs``) is an embedding, its readout a
    readout: a converted MACE-OMOL fine-tunes with the parts of any MACE."""
    from equiforce.testing.models import tiny_mace

    specs = {"total_charge": {"type": "categorical", "emb_dim": 2, "num_classes": 3}}
    model = tiny_mace(embedding_specs=specs, embedding_readout=True)
    parts = {part: [name for name, _ in members] for part, members in model_parts(model).items()}
    assert "energy_model.electronic_state.project.weight" in parts["embeddings"]
    assert "energy_model.state_readout.linear.weight" in parts["readouts"]


def test_an_unknown_part_is_named_with_the_models_parts():
    model = _tiny_model("mace")
    with pytest.raises(ValueError, match=r"unknown part\(s\) \['layer_3'\]; this model's parts: "):
        apply_freeze(model, ["layer_3"])


@pytest.mark.parametrize("family", ["mace", "allegro"])
def test_each_part_steps_at_its_own_learning_rate(family):
    """Adam's first step moves every parameter by its group's lr (|m / sqrt(v)| = 1)."""
    model = _tiny_model(family)
    config = TrainConfig(
        lr=1e-3,
        weight_decay=0.0,
        amsgrad=False,
        finetune=FinetuneConfig(freeze=["embeddings"], lr_scale={"readouts": 0.1}),
    )
    optimizer = build_optimizer(model, config)
    assert [g["name"] for g in optimizer.param_groups] == ["base", "readouts"]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.ones_like(p) if p.requires_grad else None
    optimizer.step()
    scale = {"embeddings": 0.0, "readouts": 0.1}
    for part, members in model_parts(model).items():
        for name, param in members:
            step = (param.detach() - before[name]).abs()
            expected = 1e-3 * scale.get(part, 1.0)
            torch.testing.assert_close(step, torch.full_like(step, expected), rtol=1e-6, atol=0)
    schedule = TrainingSchedule(
        dataclasses.replace(config, stage_two=dataclasses.replace(config.stage_two, lr=2e-4)),
        optimizer,
    )
    assert schedule.lr == pytest.approx(1e-3)
    schedule.stage_two_start = 0
    schedule.begin_epoch(0)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([2e-4, 2e-5])
    assert schedule.lr == pytest.approx(2e-4)


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    """Fine-tuning data (4 Cu/Au frames) and a replay file (4 more)."""
    folder = tmp_path_factory.mktemp("finetune")
    paths = {}
    for name, seeds in (("tune", range(4)), ("replay", range(10, 14))):
        frames = [emt_labelled(make_fcc_cu(repeat=1, seed=s, rattle=0.1)) for s in seeds]
        paths[name] = folder / f"{name}.xyz"
        write(paths[name], frames, format="extxyz")
    return paths


def test_foundation_model_fine_tunes_with_frozen_parts_and_replay(tmp_path, small_files):
    start = _preset_model("mace-128-l1", dtype="float32")
    start_path = save_model(start, tmp_path / "foundation.pt")
    values = config_dict(tmp_path / "run", small_files["tune"], {"family": "mace"})
    values["data"] = {
        "train_files": [
            {"path": str(small_files["tune"]), "weight": 1.0},
            {"path": str(small_files["replay"]), "weight": 0.1},
        ],
        "valid_fraction": 0.25,
        "batch_size": 3,
    }
    values["training"].update(
        init_model=str(start_path),
        max_epochs=1,
        stage_two={"enabled": False},
        ema={"enabled": False},
        finetune={"freeze": ["embeddings", "layer_0"], "lr_scale": {"readouts": 0.1}},
    )
    result = train(RunConfig.from_dict(values))
    tuned = load_model(result.model_path)
    assert tuned.spec_dict()["num_channels"] == 128 and tuned.type_names == ["Cu", "Au"]
    before, after = start.state_dict(), tuned.state_dict()
    for part, members in model_parts(tuned).items():
        changed = [not torch.equal(before[n], after[n]) for n, _ in members]
        if part in ("embeddings", "layer_0"):
            assert not any(changed), part
        else:
            assert all(changed), part
    header = result.metrics_csv.read_text().splitlines()[0].split(",")
    assert {"valid_tune_forces_rmse", "valid_replay_energy_rmse"} <= set(header)


def test_a_family_only_section_reads_the_data_at_the_files_cutoff(tmp_path):
    """Fine-tuning with ``model: {family: mace}`` builds the training graphs at the init
    model's r_max (6 Å, MACE-MP's), not the spec's default 5 Å: every neighbour the model
    sees in MD is in its training graphs."""
    from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
    from equiforce.testing.models import tiny_mace
    from equiforce.train.setup import prepare_data

    frames = [emt_labelled(make_fcc_cu(repeat=2, seed=seed, rattle=0.1)) for seed in range(4)]
    write(tmp_path / "cu.xyz", frames, format="extxyz")
    save_model(tiny_mace(r_max=6.0), tmp_path / "foundation.pt")
    settings = config_dict(tmp_path / "run", tmp_path / "cu.xyz")
    settings["model"] = {"family": "mace"}
    settings["training"]["init_model"] = str(tmp_path / "foundation.pt")
    data = prepare_data(RunConfig.from_dict(settings))
    expected = {
        configuration_to_graph(atoms_to_configuration(a), ("Cu", "Au"), 6.0)["edge_index"].shape[1]
        for a in frames
    }
    found = {data.train[k]["edge_index"].shape[1] for k in range(len(data.train))}
    assert found <= expected and min(found) > 2000  # 5 Å gives ~1440 edges per 32 atoms

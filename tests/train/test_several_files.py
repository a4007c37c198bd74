"""Several weighted training files in one run (``data.train_files``), metrics per file."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from ase.io import write

from equiforce.cli import evaluate as evaluate_cli
from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.dataset import load_dataset
from equiforce.data.mixing import concatenate, retype, tag
from equiforce.models import load_model, save_model
from equiforce.testing.structures import emt_labelled, make_fcc_cu
from equiforce.testing.tolerances import TOL
from equiforce.train.config import DataConfig, RunConfig
from equiforce.train.datafiles import load_file_sets
from equiforce.train.evaluate import evaluate, evaluate_files
from equiforce.train.losses import energy_forces_stress_loss
from equiforce.train.metrics import ErrorAccumulator, read_metrics_csv
from equiforce.train.run import train
from equiforce.train.setup import key_spec
from equiforce.typed_config import ConfigError

from .conftest import config_dict
from .test_finetune import _tiny_model

R_MAX = 4.0


def _frames(seeds, au_fraction):
    cells = [make_fcc_cu(repeat=1, seed=s, rattle=0.1, au_fraction=au_fraction) for s in seeds]
    return [emt_labelled(atoms) for atoms in cells]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """``pure``: 6 Cu-only frames; ``alloy``: 8 Cu/Au frames."""
    folder = tmp_path_factory.mktemp("several")
    paths = {"pure": folder / "pure.xyz", "alloy": folder / "alloy.xyz"}
    write(paths["pure"], _frames(range(6), 0.0), format="extxyz")
    write(paths["alloy"], _frames(range(10, 18), 0.5), format="extxyz")
    return paths


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train_files": [{"path": "a.xyz"}, {"path": "b/a.xyz"}]}, r"train_files\[1\]\.name: 'a'"),
        ({"train_files": [{"path": "a.xyz", "weight": -1}]}, r"train_files\[0\]\.weight: must"),
        ({"train_files": [{"path": "a.xyz", "wieght": 1}]}, r"train_files\[0\]\.wieght: unknown"),
        ({"train_files": [{"path": "a b.xyz"}]}, r"train_files\[0\]\.name: 'a b' may only"),
        ({"train_file": "a.xyz", "train_files": [{"path": "b.xyz"}]}, r"data\.train_file: give"),
        ({"train_files": [{"path": "b.xyz"}], "valid_file": "v.xyz"}, r"data\.valid_file: not"),
        ({"train_files": []}, r"data\.train_files: must be a non-empty list"),
        ({}, r"data\.train_file: is required"),
    ],
)
def test_config_errors_name_the_key_path(data, message):
    values = {"output_dir": "out", "data": data, "model": {"family": "mace"}}
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict(values)


def test_a_file_weight_scales_its_loss_terms(files):
    dataset = load_dataset(files["alloy"], R_MAX)
    batch = collate(dataset.graphs)
    pred = {  # any prediction: the loss is quadratic in its difference with the labels
        keys.ENERGY: batch[keys.ENERGY] + 0.3,
        keys.FORCES: batch[keys.FORCES] + 0.1,
        keys.STRESS: batch[keys.STRESS] - 0.01,
    }
    loss = energy_forces_stress_loss(1.0, 10.0, 100.0)
    weighted = collate(tag(dataset, 1, 0.25).graphs)
    assert float(loss(weighted, pred)) == pytest.approx(0.25 * float(loss(batch, pred)), rel=1e-14)
    assert weighted[keys.DATASET_INDEX].tolist() == [1] * len(dataset)


def test_species_of_all_files_share_one_order(files):
    data = DataConfig(train_files=[{"path": str(files["pure"])}, {"path": str(files["alloy"])}])
    sets = load_file_sets(data, key_spec(data), R_MAX, seed=0)
    assert sets.train.type_names == ("Cu", "Au") and sets.groups == ("pure", "alloy")
    for graph in sets.train.graphs + sets.valid.graphs:
        expected = (graph[keys.ATOMIC_NUMBERS] == 79).long()  # Cu -> 0, Au -> 1
        assert torch.equal(graph[keys.ATOM_TYPE], expected)
    counts = [
        sum(int(g[keys.DATASET_INDEX]) == k for g in sets.train.graphs + sets.valid.graphs)
        for k in (0, 1)
    ]
    assert counts == [6, 8]


def _errors(groups, graphs) -> dict[str, float]:
    """Metrics of a prediction whose error depends on each graph alone (10% of its labels)."""
    batch = collate(graphs)
    pred = {name: 1.1 * batch[name] for name in (keys.ENERGY, keys.FORCES, keys.STRESS)}
    accumulator = ErrorAccumulator(groups)
    accumulator.add(batch, pred)
    return accumulator


def test_metrics_per_file_equal_each_files_own_metrics(files):
    datasets = [retype(load_dataset(files[n], R_MAX), ("Cu", "Au")) for n in ("pure", "alloy")]
    joined = concatenate([tag(d, k, 1.0) for k, d in enumerate(datasets)])
    groups = ("pure", "alloy")
    together = _errors(groups, joined.graphs).metrics("valid")
    for name, dataset in zip(groups, datasets, strict=True):
        own = _errors((), dataset.graphs).metrics("valid")
        for key, value in own.items():
            assert together[key.replace("valid_", f"valid_{name}_")] == pytest.approx(
                value, rel=TOL.fp64.rtol, nan_ok=True
            )
    assert {k: together[k] for k in _errors((), joined.graphs).metrics("valid")} == pytest.approx(
        _errors((), joined.graphs).metrics("valid"), rel=TOL.fp64.rtol, nan_ok=True
    )
    totals = _errors(groups, joined.graphs).totals()
    restored = ErrorAccumulator.from_totals(totals, groups).metrics("valid")
    assert restored == pytest.approx(together, rel=TOL.fp64.rtol, nan_ok=True)
    with pytest.raises(ValueError, match="pass the groups"):
        ErrorAccumulator.from_totals(totals)


def test_a_run_reports_validation_metrics_per_file(tmp_path, files):
    values = config_dict(
        tmp_path / "run", files["pure"], max_epochs=1, stage_two={"enabled": False}
    )
    values["data"] = {
        "train_files": [
            {"path": str(files["pure"]), "weight": 2.0},
            {"path": str(files["alloy"]), "weight": 0.5, "name": "replay"},
        ],
        "valid_fraction": 0.3,
        "batch_size": 4,
    }
    config = RunConfig.from_dict(values)
    result = train(config)
    (row,) = read_metrics_csv(result.metrics_csv)
    sets = load_file_sets(config.data, key_spec(config.data), R_MAX, config.seed)
    model = load_model(result.model_path)
    for k, name in enumerate(("pure", "replay")):
        graphs = [g for g in sets.valid.graphs if int(g[keys.DATASET_INDEX]) == k]
        reference = evaluate(model, graphs).metrics
        for quantity, metric in (("energy", "energy_per_atom"), ("forces", "forces")):
            expected = reference[metric].rmse
            assert row[f"valid_{name}_{quantity}_rmse"] == pytest.approx(expected, rel=1e-9)
    assert "replay:" in (tmp_path / "run" / "train.log").read_text()


def test_a_species_outside_the_init_model_names_the_file(files):
    data = DataConfig(train_files=[{"path": str(files["pure"])}, {"path": str(files["alloy"])}])
    with pytest.raises(ValueError, match=r"data.train_files\[1\] .*alloy.xyz: species \['Au'\]"):
        load_file_sets(data, key_spec(data), R_MAX, 0, ("Cu",), model_path="cu_model.pt")


def test_evaluate_reports_each_file_and_all_together(tmp_path, files, capsys):
    model = _tiny_model("mace")
    save_model_path = tmp_path / "model.pt"
    save_model(model, save_model_path)
    groups = {name: load_dataset(files[name], R_MAX, ("Cu", "Au")).graphs for name in files}
    results = evaluate_files(model, groups, batch_size=5)
    everything = evaluate(model, [g for name in files for g in groups[name]])
    for name in files:
        own = evaluate(model, groups[name])
        for metric, stats in own.metrics.items():
            assert results[name].metrics[metric].rmse == pytest.approx(stats.rmse, rel=1e-12)
    for metric, stats in everything.metrics.items():
        assert results["all"].metrics[metric].rmse == pytest.approx(stats.rmse, rel=1e-12)
    parser = argparse.ArgumentParser()
    evaluate_cli.add_arguments(parser)
    paths = [str(files["pure"]), str(files["alloy"])]
    out = tmp_path / "out.json"
    args = parser.parse_args([str(save_model_path), *paths, "--json", str(out)])
    assert evaluate_cli.run(args) == 0
    printed = capsys.readouterr().out
    assert f"== {paths[0]} ==" in printed and "== all files ==" in printed
    report = json.loads(out.read_text())["files"]
    assert list(report) == [*paths, "all"]
    assert report[paths[1]]["metrics"]["forces"]["rmse"] == pytest.approx(
        results["alloy"].metrics["forces"].rmse, rel=1e-12
    )

"""Evaluation: batched predictions, error metrics, reports, parity plots and the CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from ase.data import chemical_symbols
from ase.io import read, write

from equiforce.cli import evaluate as evaluate_cli
from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.extxyz import DEFAULT_KEYS
from equiforce.data.graph import Configuration, configuration_to_graph
from equiforce.models import Potential, save_model
from equiforce.testing.models import tiny_mace
from equiforce.testing.structures import emt_labelled, make_fcc_cu, make_molecule
from equiforce.testing.tolerances import TOL
from equiforce.train.evaluate import (
    evaluate,
    format_table,
    plot_parity,
    predict,
    predict_batches,
    structures_in,
    to_json,
)


def assert_close(actual, expected, tol, what: str) -> None:
    """``np.testing.assert_allclose`` with a named tolerance."""
    np.testing.assert_allclose(actual, expected, atol=tol.atol, rtol=tol.rtol, err_msg=what)


def labelled(atoms, energy: bool = True, forces: bool = True, stress: bool = True):
    """EMT-labelled ``Configuration`` of ``atoms``, keeping only the requested labels."""
    atoms = emt_labelled(atoms)
    results = atoms.calc.results
    return Configuration(
        atomic_numbers=atoms.numbers.copy(),
        positions=atoms.positions.copy(),
        cell=atoms.cell.array.copy() if atoms.pbc.any() else np.zeros((3, 3)),
        pbc=atoms.pbc.copy(),
        energy=results["energy"] if energy else None,
        forces=results["forces"] if forces else None,
        stress=atoms.get_stress(voigt=False) if stress and "stress" in results else None,
        source="test",
    )


@pytest.fixture(scope="module")
def model64() -> Potential:
    """Tiny float64 MACE."""
    return tiny_mace(torch.float64)


@pytest.fixture(scope="module")
def structures():
    """Three labelled periodic Cu/Au cells and one labelled molecule (no stress)."""
    cells = [labelled(make_fcc_cu(repeat=1, seed=k)) for k in range(3)]
    return cells + [labelled(make_molecule("CH3CH2OH", seed=9))]


def reference_predictions(model, configs):
    """Energies, per-structure forces and stresses by one direct model call each."""
    out = []
    for config in configs:
        graph = configuration_to_graph(config, model.type_names, model.r_max)
        batch = collate([graph])
        pred = model(batch, compute_forces=True, compute_stress=True, create_graph=False)
        out.append({name: value.detach().numpy() for name, value in pred.items()})
    return out


def test_metrics_match_hand_computed_errors(model64, structures):
    result = evaluate(model64, structures, batch_size=3)
    direct = reference_predictions(model64, structures)
    energy_err = np.array(
        [d[keys.ENERGY][0] - c.energy for d, c in zip(direct, structures, strict=True)]
    )
    n_atoms = np.array([c.n_atoms for c in structures])
    force_err = np.concatenate(
        [d[keys.FORCES] - c.forces for d, c in zip(direct, structures, strict=True)]
    )
    stress_err = np.stack(
        [
            d[keys.STRESS][0] - c.stress
            for d, c in zip(direct, structures, strict=True)
            if c.stress is not None
        ]
    )
    expected = {
        "energy": 1000 * energy_err,
        "energy_per_atom": 1000 * energy_err / n_atoms,
        "forces": 1000 * force_err,
        "stress": 1000 * stress_err,
    }
    assert set(result.metrics) == set(expected)
    for name, errors in expected.items():
        stats = result.metrics[name]
        assert_close(stats.mae, np.abs(errors).mean(), TOL.fp64, f"{name} MAE")
        assert_close(stats.rmse, np.sqrt((errors**2).mean()), TOL.fp64, f"{name} RMSE")
        assert stats.count == errors.size
    assert result.metrics["stress"].count == 3 * 9
    assert (result.n_configs, result.n_atoms) == (4, int(n_atoms.sum()))
    assert result.metrics["forces"].unit == "meV/Å"
    symbols = np.concatenate([[chemical_symbols[z] for z in c.atomic_numbers] for c in structures])
    assert list(result.forces_by_species) == sorted(set(symbols))  # Au C Cu H O
    for symbol, stats in result.forces_by_species.items():
        errors = expected["forces"][symbols == symbol]
        assert_close(stats.mae, np.abs(errors).mean(), TOL.fp64, f"{symbol} force MAE")
        assert_close(stats.rmse, np.sqrt((errors**2).mean()), TOL.fp64, f"{symbol} force RMSE")
        assert stats.count == errors.size
    graphs = [configuration_to_graph(c, model64.type_names, model64.r_max) for c in structures]
    from_graphs = evaluate(model64, graphs, batch_size=2).forces_by_species
    assert from_graphs.keys() == result.forces_by_species.keys()
    for symbol, stats in from_graphs.items():
        assert_close(stats.rmse, result.forces_by_species[symbol].rmse, TOL.fp64, symbol)


def test_predictions_do_not_depend_on_batch_size(model64, structures):
    one = predict(model64, structures, batch_size=1, compute_stress=True)
    all_at_once = predict(model64, structures, batch_size=len(structures), compute_stress=True)
    for name in ("energy", "forces", "stress"):
        assert_close(getattr(one, name), getattr(all_at_once, name), TOL.fp64, name)
    np.testing.assert_array_equal(one.n_atoms, [c.n_atoms for c in structures])


def test_graphs_and_configurations_give_the_same_result(model64, structures):
    graphs = [configuration_to_graph(c, model64.type_names, model64.r_max) for c in structures]
    from_graphs = evaluate(model64, graphs, batch_size=2)
    from_configs = evaluate(model64, structures, batch_size=2)
    for name, stats in from_configs.metrics.items():
        assert_close(from_graphs.metrics[name].rmse, stats.rmse, TOL.fp64, name)
        assert from_graphs.metrics[name].count == stats.count


def test_graphs_built_for_another_type_order_are_rejected(model64, structures):
    reversed_types = model64.type_names[::-1]
    graphs = [configuration_to_graph(c, reversed_types, model64.r_max) for c in structures]
    with pytest.raises(ValueError, match="graph 0: .*different type order"):
        predict(model64, graphs)


def test_float32_model_predicts_float64_and_keeps_no_graph(structures):
    model = tiny_mace(torch.float32).train()
    with torch.no_grad():  # forces still come out: predict enables grad itself
        pred = predict(model, structures, batch_size=2, compute_stress=True)
    for array in (pred.energy, pred.forces, pred.stress):
        assert isinstance(array, np.ndarray) and array.dtype == np.float64
    assert model.training  # restored
    assert all(p.grad is None for p in model.parameters())
    assert_close(pred.energy, predict(model, structures).energy, TOL.fp32, "energy")


def test_structures_without_a_label_are_left_out(model64):
    configs = [
        labelled(make_fcc_cu(repeat=1, seed=1), energy=False),
        labelled(make_fcc_cu(repeat=1, seed=2), forces=False, stress=False),
        labelled(make_molecule("H2O", seed=3), energy=False, forces=False),
    ]
    result = evaluate(model64, configs)
    assert result.metrics["energy"].count == 1
    assert result.metrics["forces"].count == 4 * 3
    assert result.metrics["stress"].count == 9
    unlabelled = evaluate(model64, [labelled(make_molecule("H2O"), energy=False, forces=False)])
    assert unlabelled.metrics == {} and unlabelled.parity == {}


def test_empty_input_and_bad_batch_size_are_errors(model64, structures):
    with pytest.raises(ValueError, match="at least one structure"):
        predict(model64, [])
    with pytest.raises(ValueError, match="batch_size"):
        predict(model64, structures, batch_size=0)


def test_the_table_keeps_large_errors_apart():
    """Errors of millions of meV (E0s far off) stay separate columns."""
    from equiforce.train.evaluate import ErrorStats, EvaluationResult

    stats = ErrorStats(mae=3750023.0723, rmse=3781780.6749, count=16, unit="meV")
    table = format_table(EvaluationResult(16, 144, {"energy": stats}, {}))
    assert table.splitlines()[-1].split()[-3:] == ["3750023.0723", "3781780.6749", "16"]


def test_table_json_and_parity_plots(model64, structures, tmp_path):
    result = evaluate(model64, structures)
    table = format_table(result)
    for name in ("energy_per_atom", "forces", "stress", "meV/atom", "forces [Cu]", "forces [H]"):
        assert name in table
    text = to_json(result, tmp_path / "metrics.json")
    loaded = json.loads((tmp_path / "metrics.json").read_text())
    assert loaded == json.loads(text)
    assert loaded["metrics"]["forces"]["rmse"] == pytest.approx(result.metrics["forces"].rmse)
    by_species = loaded["forces_by_species"]
    assert by_species["O"]["mae"] == pytest.approx(result.forces_by_species["O"].mae)
    paths = plot_parity(result, tmp_path / "plots")
    assert sorted(p.name for p in paths) == [
        "parity_energy_per_atom.png",
        "parity_forces.png",
        "parity_stress.png",
    ]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_cli_evaluate_with_custom_keys(model64, tmp_path, capsys):
    frames = []
    for seed in range(3):
        atoms = emt_labelled(make_fcc_cu(repeat=1, seed=seed))
        atoms.info["ref_energy"] = atoms.get_potential_energy()
        atoms.arrays["ref_forces"] = atoms.get_forces()
        atoms.calc = None
        frames.append(atoms)
    write(tmp_path / "data.xyz", frames, format="extxyz")
    save_model(model64, tmp_path / "model.pt")
    parser = argparse.ArgumentParser()
    evaluate_cli.add_arguments(parser)
    args = parser.parse_args(
        [
            str(tmp_path / "model.pt"),
            str(tmp_path / "data.xyz"),
            "--energy-key",
            "ref_energy",
            "--forces-key",
            "ref_forces",
            "--batch-size",
            "2",
            "--json",
            str(tmp_path / "out.json"),
            "--plots",
            str(tmp_path / "plots"),
        ]
    )
    assert evaluate_cli.run(args) == 0
    assert "forces" in capsys.readouterr().out
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["n_configs"] == 3
    assert set(report["metrics"]) == {"energy", "energy_per_atom", "forces"}
    assert (tmp_path / "plots" / "parity_forces.png").exists()
    args.energy_key, args.forces_key = "nope", "nope"
    with pytest.raises(ValueError, match="no frame has an energy, forces or stress label"):
        evaluate_cli.run(args)


def test_structures_are_streamed_one_batch_at_a_time(model64, structures):
    """``evaluate`` takes any iterable and pulls only a batch ahead of the model."""
    pulled = []

    def stream():
        for config in structures * 3:
            pulled.append(config)
            yield config

    batches = predict_batches(model64, stream(), batch_size=5, compute_stress=None)
    first, pred = next(batches)
    assert len(pulled) == 5 and len(first) == 5 and pred.stress is not None
    batches.close()
    whole = evaluate(model64, structures * 3, batch_size=len(structures) * 3)
    streamed = evaluate(model64, iter(structures * 3), batch_size=5)
    for name, stats in whole.metrics.items():
        assert streamed.metrics[name].count == stats.count
        assert streamed.metrics[name].rmse == pytest.approx(stats.rmse, rel=1e-12)
        assert streamed.metrics[name].mae == pytest.approx(stats.mae, rel=1e-12)


def test_parity_data_is_a_bounded_uniform_sample(model64):
    """Above ``max_parity_points`` a parity plot keeps a reproducible sample in stream order;
    the errors still cover every value."""
    structures = [labelled(make_fcc_cu(repeat=1, seed=k)) for k in range(12)]
    full = evaluate(model64, structures, batch_size=5)
    capped = evaluate(model64, structures, batch_size=5, max_parity_points=10)
    assert capped.metrics == full.metrics
    reference = full.parity["forces"].reference
    sample = capped.parity["forces"]
    assert len(sample.reference) == 10 < len(reference)
    positions = [int(np.flatnonzero(reference == value)[0]) for value in sample.reference]
    assert positions == sorted(positions)  # a subset, in order
    again = evaluate(model64, structures, batch_size=5, max_parity_points=10).parity["forces"]
    assert np.array_equal(again.reference, sample.reference)
    assert len(capped.parity["energy_per_atom"].reference) == 10


def test_cli_evaluates_a_preprocessed_directory_as_its_file(model64, tmp_path, capsys):
    from equiforce.data.ondisk import preprocess

    frames = [emt_labelled(make_fcc_cu(repeat=1, seed=seed)) for seed in range(5)]
    frames.append(emt_labelled(make_molecule("CH3CH2OH", seed=3)))
    write(tmp_path / "data.xyz", frames, format="extxyz")
    save_model(model64, tmp_path / "model.pt")
    preprocess(tmp_path / "data.xyz", tmp_path / "pre", None, model64.r_max, shard_size=4)
    parser = argparse.ArgumentParser()
    evaluate_cli.add_arguments(parser)
    reports = {}
    for source in ("data.xyz", "pre"):
        out = tmp_path / f"{source}.json"
        argv = [str(tmp_path / "model.pt"), str(tmp_path / source), "--json", str(out)]
        assert evaluate_cli.run(parser.parse_args([*argv, "--batch-size", "4"])) == 0
        reports[source] = json.loads(out.read_text())
    assert reports["pre"]["n_configs"] == 6
    assert set(reports["pre"]["metrics"]) == {"energy", "energy_per_atom", "forces", "stress"}
    for name, stats in reports["data.xyz"]["metrics"].items():
        assert reports["pre"]["metrics"][name]["count"] == stats["count"]
        assert reports["pre"]["metrics"][name]["rmse"] == pytest.approx(stats["rmse"], rel=1e-10)
    preprocess(tmp_path / "data.xyz", tmp_path / "wide", None, model64.r_max + 1.0)
    args = parser.parse_args([str(tmp_path / "model.pt"), str(tmp_path / "wide")])
    with pytest.raises(ValueError, match=r"wide: preprocessed with r_max .*--r-max"):
        evaluate_cli.run(args)
    args = parser.parse_args(
        [str(tmp_path / "model.pt"), str(tmp_path / "pre"), "--energy-key", "e"]
    )
    with pytest.raises(ValueError, match="pre: preprocessed with label keys"):
        evaluate_cli.run(args)


def test_errors_by_electronic_state_equal_each_states_own_evaluation(tmp_path):
    """Frames of a charge-aware model's data in three states (``charge`` / ``spin`` in
    ``info``; one frame without them: a neutral singlet): each state's errors equal
    ``evaluate`` of its structures alone, from the extxyz file and from its preprocessed
    directory; the table and the JSON (``by_state``) carry them."""
    from equiforce.data.extxyz import read_configurations
    from equiforce.data.ondisk import preprocess

    specs = {"total_charge": {"type": "categorical", "emb_dim": 2, "num_classes": 3, "offset": 1}}
    model = tiny_mace(embedding_specs=specs)
    frames = [emt_labelled(make_fcc_cu(repeat=1, seed=seed)) for seed in range(6)]
    states = [(-1, 2), (0, 1), (1, 2), None, (-1, 2), (0, 3)]
    for frame, state in zip(frames, states, strict=True):
        if state is not None:
            frame.info.update(charge=state[0], spin=state[1])
    write(tmp_path / "data.xyz", frames, format="extxyz")
    configs = read_configurations(tmp_path / "data.xyz")
    result = evaluate(model, configs, batch_size=4)
    names = ["charge -1, multiplicity 2", "charge 0, multiplicity 1", "charge 1, multiplicity 2"]
    assert list(result.by_state) == [*names, "charge 0, multiplicity 3"]
    assert result.by_state[names[0]].n_configs == 2 and result.by_state[names[1]].n_configs == 2
    for state, part in result.by_state.items():
        mine = [
            c
            for c in configs
            if f"charge {c.total_charge:g}, multiplicity {c.total_spin:g}" == state
        ]
        alone = evaluate(model, mine, batch_size=2)
        assert part.metrics.keys() == alone.metrics.keys()
        for name, stats in alone.metrics.items():
            assert part.metrics[name].count == stats.count, (state, name)
            assert_close(part.metrics[name].rmse, stats.rmse, TOL.fp64, f"{state} {name}")
    assert "forces [charge -1, multiplicity 2: 2]" in format_table(result)
    preprocess(tmp_path / "data.xyz", tmp_path / "pre", None, model.r_max)
    graphs = structures_in(tmp_path / "pre", model, DEFAULT_KEYS)
    from_directory = json.loads(to_json(evaluate(model, graphs, batch_size=4)))["by_state"]
    assert from_directory == json.loads(to_json(result))["by_state"]


def test_errors_by_config_type_equal_each_types_own_evaluation(model64, tmp_path, capsys):
    """An extxyz file of two config types (``config_type`` in ``info``, mace-torch's) and
    frames without one ("Default"): each type's errors (energy per atom, forces, stress, their
    counts) equal ``evaluate`` of that type's structures alone; the table (``[bulk: 3]``) and
    the JSON (``by_config_type``) carry them; another key is given by ``--config-type-key``; a
    preprocessed directory keeps the types (an index per structure, the names in its
    manifest): the same errors by type as the file; evaluated with another key it is refused
    naming both; one preprocessed before types were kept (no ``config_type`` shard file)
    reports none; a non-string type is an error naming the frame and the field."""
    from equiforce.data.extxyz import DataError, read_configurations
    from equiforce.data.ondisk import preprocess

    frames = [emt_labelled(make_fcc_cu(repeat=1, seed=seed)) for seed in range(5)]
    frames.append(emt_labelled(make_molecule("CH3CH2OH", seed=3)))
    kinds = ["bulk", "rattled", "bulk", None, "rattled", "bulk"]
    for frame, kind in zip(frames, kinds, strict=True):
        if kind is not None:
            frame.info["config_type"] = kind
            frame.info["kind"] = kind.upper()
    write(tmp_path / "data.xyz", frames, format="extxyz")
    configs = read_configurations(tmp_path / "data.xyz")
    assert [c.config_type for c in configs] == [k or "Default" for k in kinds]
    result = evaluate(model64, configs, batch_size=4)
    assert list(result.by_config_type) == ["bulk", "rattled", "Default"]
    for kind, part in result.by_config_type.items():
        alone = evaluate(model64, [c for c in configs if c.config_type == kind], batch_size=2)
        assert part.n_configs == alone.n_configs and part.n_atoms == alone.n_atoms
        assert part.metrics.keys() == alone.metrics.keys() and part.parity == {}
        for name, stats in alone.metrics.items():
            assert part.metrics[name].count == stats.count, (kind, name)
            assert_close(part.metrics[name].rmse, stats.rmse, TOL.fp64, f"{kind} {name}")
            assert_close(part.metrics[name].mae, stats.mae, TOL.fp64, f"{kind} {name}")
    table = format_table(result)
    assert "energy_per_atom [bulk: 3]" in table and "forces [Default: 1]" in table
    payload = json.loads(to_json(result))
    assert payload["by_config_type"]["rattled"]["n_configs"] == 2
    rmse = payload["by_config_type"]["bulk"]["metrics"]["forces"]["rmse"]
    assert rmse == pytest.approx(result.by_config_type["bulk"].metrics["forces"].rmse)

    save_model(model64, tmp_path / "model.pt")
    parser = argparse.ArgumentParser()
    evaluate_cli.add_arguments(parser)
    argv = [str(tmp_path / "model.pt"), str(tmp_path / "data.xyz"), "--json"]
    args = parser.parse_args([*argv, str(tmp_path / "kind.json"), "--config-type-key", "kind"])
    assert evaluate_cli.run(args) == 0
    by_kind = json.loads((tmp_path / "kind.json").read_text())["by_config_type"]
    assert by_kind.keys() == {"BULK", "RATTLED", "Default"}
    manifest = preprocess(tmp_path / "data.xyz", tmp_path / "pre", None, model64.r_max)
    assert manifest["config_types"] == ["bulk", "rattled", "Default"]
    argv = [str(tmp_path / "model.pt"), str(tmp_path / "pre"), "--json", str(tmp_path / "p.json")]
    assert evaluate_cli.run(parser.parse_args(argv)) == 0
    by_type = json.loads((tmp_path / "p.json").read_text())["by_config_type"]
    assert by_type.keys() == payload["by_config_type"].keys()
    for kind, part in by_type.items():
        assert part["n_configs"] == payload["by_config_type"][kind]["n_configs"]
        rmse = part["metrics"]["forces"]["rmse"]
        assert rmse == pytest.approx(payload["by_config_type"][kind]["metrics"]["forces"]["rmse"])
    with pytest.raises(ValueError, match="pre: preprocessed with config types from 'config_type'"):
        evaluate_cli.run(parser.parse_args([*argv, "--config-type-key", "kind"]))
    manifest = json.loads((tmp_path / "pre" / "manifest.json").read_text())
    for key in ("config_type_key", "config_types"):  # as an earlier equiforce wrote it
        del manifest[key]
    for shard in manifest["shards"]:
        for table in ("bytes", "crc32"):
            del shard[table]["config_type"]
        (tmp_path / "pre" / shard["name"] / "config_type.npy").unlink()
    (tmp_path / "pre" / "manifest.json").write_text(json.dumps(manifest))
    assert evaluate_cli.run(parser.parse_args([*argv, "--config-type-key", "kind"])) == 0
    assert json.loads((tmp_path / "p.json").read_text())["by_config_type"] == {}

    frames[0].info["config_type"] = np.array([1.0, 2.0])
    write(tmp_path / "bad.xyz", frames, format="extxyz")
    with pytest.raises(DataError, match=r"bad.xyz, frame 0: field 'config_type' must be a name"):
        read_configurations(tmp_path / "bad.xyz")


def test_cli_writes_every_frame_with_its_predictions(model64, tmp_path, capsys):
    """``--predictions OUT.xyz``: every frame of the file (a labelled cell, an unlabelled
    molecule, a cell without labels) is written with the model's energy, forces, per-atom
    energies (summing to the energy) and, for the cells, stress (equal to ``predict``: 1e-10,
    the columns to the 8 decimals of extxyz), its own info and labels kept; a file of
    unlabelled frames is written too (no error); a preprocessed directory, several files, and
    a frame the model cannot run are refused, leaving no output file."""
    from equiforce.data.extxyz import read_configurations
    from equiforce.data.ondisk import preprocess
    from equiforce.train.predictions import PREFIX

    labelled_cell = emt_labelled(make_fcc_cu(repeat=1, seed=1))
    labelled_cell.info["config_type"] = "bulk"
    molecule = make_molecule("CH3CH2OH", seed=3)
    bare_cell = make_fcc_cu(repeat=1, seed=2)
    write(tmp_path / "data.xyz", [labelled_cell, molecule, bare_cell], format="extxyz")
    save_model(model64, tmp_path / "model.pt")
    parser = argparse.ArgumentParser()
    evaluate_cli.add_arguments(parser)
    model_path, out = str(tmp_path / "model.pt"), tmp_path / "out" / "predicted.xyz"
    args = parser.parse_args([model_path, str(tmp_path / "data.xyz"), "--predictions", str(out)])
    assert evaluate_cli.run(args) == 0
    assert "3 frames with predictions written" in capsys.readouterr().out
    configs = read_configurations(tmp_path / "data.xyz")
    expected = predict(model64, configs, compute_stress=True)
    frames = read(out, ":")
    assert len(frames) == 3 and frames[0].info["config_type"] == "bulk"
    assert frames[0].get_potential_energy() == pytest.approx(labelled_cell.get_potential_energy())
    offsets = np.concatenate([[0], np.cumsum(expected.n_atoms)])
    for k, frame in enumerate(frames):
        assert_close(frame.info[PREFIX + "energy"], expected.energy[k], TOL.fp64, "energy")
        forces = expected.forces[offsets[k] : offsets[k + 1]]  # extxyz columns: 8 decimals
        np.testing.assert_allclose(frame.arrays[PREFIX + "forces"], forces, rtol=0, atol=6e-9)
        energies = expected.node_energy[offsets[k] : offsets[k + 1]]
        np.testing.assert_allclose(frame.arrays[PREFIX + "energies"], energies, atol=6e-9)
        assert energies.sum() == pytest.approx(expected.energy[k], abs=1e-10)
        if frame.pbc.all():
            voigt = expected.stress[k][[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
            assert_close(frame.info[PREFIX + "stress"], voigt, TOL.fp64, "stress")
        else:
            assert PREFIX + "stress" not in frame.info

    write(tmp_path / "bare.xyz", [molecule, bare_cell], format="extxyz")
    bare = [model_path, str(tmp_path / "bare.xyz"), "--predictions", str(tmp_path / "b.xyz")]
    assert (
        evaluate_cli.run(parser.parse_args(bare)) == 0 and len(read(tmp_path / "b.xyz", ":")) == 2
    )
    with pytest.raises(ValueError, match="no frame has an energy, forces or stress label"):
        evaluate_cli.run(parser.parse_args(bare[:2]))
    write(tmp_path / "labelled.xyz", [labelled_cell], format="extxyz")
    preprocess(tmp_path / "labelled.xyz", tmp_path / "pre", None, model64.r_max)
    refused = tmp_path / "refused.xyz"
    pre = [model_path, str(tmp_path / "pre"), "--predictions", str(refused)]
    with pytest.raises(ValueError, match="pre: a preprocessed directory keeps no frames"):
        evaluate_cli.run(parser.parse_args(pre))
    two = [model_path, str(tmp_path / "data.xyz"), str(tmp_path / "bare.xyz")]
    with pytest.raises(ValueError, match="--predictions writes one data file"):
        evaluate_cli.run(parser.parse_args([*two, "--predictions", str(refused)]))
    iron = make_fcc_cu(repeat=1, seed=4)
    iron.symbols[0] = "Fe"
    write(tmp_path / "iron.xyz", [bare_cell, iron])
    iron = [model_path, str(tmp_path / "iron.xyz"), "--predictions", str(refused)]
    with pytest.raises(ValueError, match="element Fe"):
        evaluate_cli.run(parser.parse_args([*iron, "--batch-size", "1"]))
    assert not refused.exists() and list(tmp_path.glob(".refused*")) == []

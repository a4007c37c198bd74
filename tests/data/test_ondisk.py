"""The preprocessed on-disk format: graphs, statistics, training and corrupt-shard errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from equiforce.data import keys
from equiforce.data.dataset import load_dataset, make_loader
from equiforce.data.extxyz import DEFAULT_KEYS
from equiforce.data.ondisk import OnDiskDataset, OnDiskError, preprocess, verify_preprocessed
from equiforce.data.statistics import compute_statistics

R_MAX = 4.0


def _frames(n: int, seed: int = 0) -> list[Atoms]:
    """Cu/Au cells and Cu/Au clusters with EMT labels; some frames carry partial labels."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        if k % 3 == 2:  # a non-periodic cluster
            n_atoms = int(rng.integers(3, 7))
            chain = np.cumsum(np.full((n_atoms, 3), 1.5), axis=0)
            atoms = Atoms(positions=chain + rng.uniform(0.0, 1.0, size=(n_atoms, 3)), pbc=False)
        else:
            atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
            atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        numbers = np.where(rng.random(len(atoms)) < 0.3, 79, 29)
        atoms.numbers = numbers
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        stress = atoms.get_stress() if atoms.pbc.all() else None
        labels = {"energy": energy, "forces": forces}
        if stress is not None:
            labels["stress"] = stress
        if k % 5 == 4:
            labels.pop("forces")  # energy (and stress) only
        atoms.calc = SinglePointCalculator(atoms, **labels)
        if k % 7 == 6:
            atoms.info["config_weight"] = 2.5
        if k % 4 == 1:  # charged, and not a singlet (state.npy)
            atoms.info.update(charge=k % 3 - 1, spin=2 + k % 2)
        frames.append(atoms)
    return frames


@pytest.fixture
def data(tmp_path, write_frames):
    xyz = write_frames(_frames(23), "data.xyz")
    out = tmp_path / "pre"
    preprocess(xyz, out, None, R_MAX, shard_size=7, chunk_size=4)
    return xyz, out


def _assert_same_graph(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].shape == b[name].shape, name
        assert torch.equal(a[name], b[name]), name


def test_round_trip_equals_graph_dataset(data):
    xyz, out = data
    reference = load_dataset(xyz, R_MAX, require_energy=False, require_forces=False)
    dataset = OnDiskDataset(out)
    assert len(dataset) == len(reference) == 23 and len(dataset.manifest["shards"]) == 4
    assert dataset.type_names == reference.type_names == ("Cu", "Au")
    for k in range(len(reference)):
        _assert_same_graph(dataset[k], reference[k])
    assert dataset.source(9) == f"{xyz}, frame 9"
    view = dataset.subset([5, 0, 17])
    _assert_same_graph(view[2], reference[17])
    batches = list(make_loader(dataset, 5, shuffle=True, seed=3, epoch=1))
    expected = list(make_loader(reference, 5, shuffle=True, seed=3, epoch=1))
    for got, want in zip(batches, expected, strict=True):
        _assert_same_graph(dict(got), dict(want))


def test_streaming_statistics_equal_in_memory_ones(data):
    xyz, out = data
    reference = load_dataset(xyz, R_MAX, require_energy=False, require_forces=False)
    want = compute_statistics(reference, R_MAX)
    dataset = OnDiskDataset(out)
    view_indices = [1, 4, 6, 9, 10, 15, 22]
    for got, expected in [
        (dataset.accumulate().statistics(dataset.type_names), want),
        (
            dataset.subset(view_indices).accumulate().statistics(),
            compute_statistics(reference.subset(view_indices), R_MAX),
        ),
        (
            dataset.accumulate().statistics(None, {"Cu": -0.1, "Au": 0.2}),
            compute_statistics(reference, R_MAX, isolated_atoms={"Cu": -0.1, "Au": 0.2}),
        ),
    ]:
        assert got.type_names == expected.type_names and got.n_configs == expected.n_configs
        np.testing.assert_allclose(got.atomic_energies, expected.atomic_energies, rtol=1e-10)
        for name in ("avg_num_neighbors", "force_rms", "mean_interaction_energy"):
            assert getattr(got, name) == pytest.approx(getattr(expected, name), rel=1e-10)
    assert dataset.manifest["statistics"]["force_rms"] == pytest.approx(want.force_rms, rel=1e-12)


def test_workers_write_the_same_arrays(tmp_path, data):
    xyz, out = data
    parallel = tmp_path / "parallel"
    preprocess(xyz, parallel, None, R_MAX, workers=2, shard_size=7, chunk_size=4)
    one, two = OnDiskDataset(out), OnDiskDataset(parallel)
    for k in range(len(one)):
        _assert_same_graph(one[k], two[k])


def test_retype_and_unknown_species(data, tmp_path, write_frames):
    _, out = data
    dataset = OnDiskDataset(out, ("Au", "Cu", "H"))
    graph = dataset[0]
    assert torch.equal(graph["atom_type"], (graph["atomic_numbers"] == 29).long())
    with pytest.raises(ValueError, match="species \\['Au'\\] are not in"):
        OnDiskDataset(out, ("Cu",))
    xyz = write_frames(_frames(2), "two.xyz")
    with pytest.raises(ValueError, match="frame 0: element Au"):
        preprocess(xyz, tmp_path / "cu_only", ["Cu"], R_MAX)


def _overwrite(file, offset: int, data: bytes) -> None:
    """Replace ``len(data)`` bytes of ``file`` at ``offset`` (its size unchanged)."""
    raw = bytearray(file.read_bytes())
    raw[offset : offset + len(data)] = data
    file.write_bytes(bytes(raw))


def _cut(file, n_bytes: int) -> None:
    """Remove the last ``n_bytes`` of ``file`` (a partial copy)."""
    file.write_bytes(file.read_bytes()[:-n_bytes])


def test_truncated_or_corrupt_shard_is_named(data):
    _, out = data
    _cut(out / "shard_00001" / "pos.npy", 40)
    dataset = OnDiskDataset(out)
    dataset[0]  # shard 0 is intact
    with pytest.raises(OnDiskError, match="shard_00001/pos.npy: .* truncated or corrupt"):
        dataset[8]
    _overwrite(out / "shard_00002" / "energy.npy", 0, b"xxxxxx")  # magic string destroyed
    with pytest.raises(OnDiskError, match="shard_00002/energy.npy: CRC-32 .* changed since"):
        dataset[15]
    manifest = json.loads((out / "manifest.json").read_text())
    for shard in manifest["shards"]:
        del shard["crc32"]  # as written before checksums: sizes and headers are still checked
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(OnDiskError, match="shard_00002/energy.npy: corrupt shard file"):
        OnDiskDataset(out)[15]


def test_a_changed_byte_in_a_shard_is_named_when_read_and_by_verify(data, capsys):
    """One force component's byte changed (size and header intact: what only the bytes'
    checksum sees) and one file cut short: reading the shard, ``verify_preprocessed`` and
    ``equiforce preprocess --verify`` name them; the intact directory verifies clean."""
    from equiforce.cli.main import main

    _, out = data
    assert verify_preprocessed(out) == []
    assert main(["preprocess", "--verify", str(out)]) == 0
    assert "every shard file matches" in capsys.readouterr().out
    forces = out / "shard_00001" / "forces.npy"
    last = forces.read_bytes()[-3]  # the last force component changes in its 3rd digit
    _overwrite(forces, forces.stat().st_size - 3, bytes([last ^ 0x10]))
    _cut(out / "shard_00002" / "edge_index.npy", 8)
    dataset = OnDiskDataset(out)
    dataset[0]  # shard 0 is intact
    with pytest.raises(OnDiskError, match="shard_00001/forces.npy: CRC-32 .* changed since"):
        dataset[7]
    problems = verify_preprocessed(out)
    assert len(problems) == 2, problems
    assert "shard_00001/forces.npy: CRC-32" in problems[0]
    assert "shard_00002/edge_index.npy" in problems[1] and "truncated" in problems[1]
    assert main(["preprocess", "--verify", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "forces.npy" in printed and "edge_index.npy" in printed and "2 shard file(s)" in printed


def test_manifest_version_mismatch_is_named(data):
    _, out = data
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["version"] = 99
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(OnDiskError, match="manifest.json: format version 99"):
        OnDiskDataset(out)


def test_cli_preprocess_then_training_from_the_directory_equals_the_xyz_run(tmp_path, data):
    from equiforce.cli.main import main
    from equiforce.models.io import load_model
    from equiforce.train.config import RunConfig
    from equiforce.train.run import train
    from tests.train.conftest import config_dict

    xyz, _ = data
    out = tmp_path / "cli_pre"
    assert main(["preprocess", str(xyz), str(out), "--r-max", str(R_MAX), "--workers", "1"]) == 0
    runs = {}
    for name, source in (("xyz", xyz), ("dir", out)):
        settings = config_dict(tmp_path / name, source, max_epochs=2)
        settings["training"]["stage_two"] = {"enabled": False}
        runs[name] = train(RunConfig.from_dict(settings))
    want = load_model(runs["xyz"].model_path).state_dict()
    got = load_model(runs["dir"].model_path).state_dict()
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-12, msg=name)
    assert runs["dir"].final_metrics["valid_forces_rmse"] == pytest.approx(
        runs["xyz"].final_metrics["valid_forces_rmse"], rel=1e-9
    )


def test_cli_preprocess_refuses_a_used_directory(data, capsys):
    from equiforce.cli.main import main

    xyz, out = data
    assert main(["preprocess", str(xyz), str(out), "--r-max", "4"]) == 2
    assert "already a preprocessed dataset" in capsys.readouterr().err


def test_a_directory_of_another_cutoff_or_key_spec_is_refused(tmp_path, data):
    from equiforce.train.config import RunConfig
    from equiforce.train.setup import prepare_data
    from tests.train.conftest import config_dict

    _, out = data
    settings = config_dict(tmp_path, out)
    settings["model"]["r_max"] = 3.0
    with pytest.raises(ValueError, match="pre: preprocessed with r_max 4.0 Å but model.r_max"):
        prepare_data(RunConfig.from_dict(settings))
    settings = config_dict(tmp_path, out)
    settings["data"]["energy_key"] = "REF_energy"
    with pytest.raises(ValueError, match="pre: preprocessed with label keys"):
        prepare_data(RunConfig.from_dict(settings))


def _without_states(out):
    """``out`` as ``equiforce preprocess`` wrote it before states were stored: no
    ``state.npy``, no state keys in the manifest."""
    from equiforce.data.ondisk import MANIFEST, STATE_LABEL_KEYS

    manifest = json.loads((out / MANIFEST).read_text())
    for name in STATE_LABEL_KEYS:
        del manifest["keys"][name]
    for shard in manifest["shards"]:
        (out / shard["name"] / "state.npy").unlink()
        del shard["bytes"]["state"], shard["crc32"]["state"]
    (out / MANIFEST).write_text(json.dumps(manifest))


def test_a_directory_without_states_reads_as_neutral_singlets_for_a_charge_blind_model(
    tmp_path, data
):
    """A directory preprocessed before states were stored: a charge-blind model trains
    and evaluates on it (every frame a neutral singlet); a charge-aware one refuses it by
    name, in training and in evaluation, rather than reading its charges as zero."""
    from equiforce.models import save_model
    from equiforce.testing.models import tiny_mace
    from equiforce.train.config import RunConfig
    from equiforce.train.evaluate import structures_in
    from equiforce.train.setup import prepare_data
    from tests.train.conftest import config_dict

    _, out = data
    _without_states(out)
    dataset = OnDiskDataset(out)
    assert {tuple(dataset[k][keys.TOTAL_CHARGE].tolist()) for k in range(len(dataset))} == {(0.0,)}
    settings = config_dict(tmp_path, out)
    assert len(prepare_data(RunConfig.from_dict(settings)).train) > 0
    assert len(list(structures_in(out, tiny_mace(), DEFAULT_KEYS))) == 23
    specs = {"total_charge": {"type": "categorical", "emb_dim": 2, "num_classes": 3, "offset": 1}}
    settings["model"]["embedding_specs"] = specs
    refusal = "pre: preprocessed before equiforce stored each frame's charge and spin"
    with pytest.raises(ValueError, match=refusal):
        prepare_data(RunConfig.from_dict(settings))
    with pytest.raises(ValueError, match=refusal):
        structures_in(out, tiny_mace(embedding_specs=specs), DEFAULT_KEYS)
    save_model(tiny_mace(embedding_specs=specs, r_max=R_MAX), tmp_path / "aware.pt")
    settings["model"] = {"family": "mace"}  # fine-tuning it: the file's spec
    settings["training"]["init_model"] = str(tmp_path / "aware.pt")
    with pytest.raises(ValueError, match=refusal):
        prepare_data(RunConfig.from_dict(settings))


def test_shards_closed_and_reopened_give_the_same_graphs(data, monkeypatch):
    from equiforce.data import ondisk

    xyz, out = data
    reference = load_dataset(xyz, R_MAX, require_energy=False, require_forces=False)
    monkeypatch.setattr(ondisk, "MAX_OPEN_SHARDS", 2)
    dataset = OnDiskDataset(out)
    for k in [0, 8, 16, 22, 1, 9, 3, 21]:
        _assert_same_graph(dataset[k], reference[k])
    assert len(dataset._open) == 2


def test_train_and_valid_directories_stay_on_disk_with_the_manifest_statistics(tmp_path, data):
    from equiforce.train.config import RunConfig
    from equiforce.train.setup import prepare_data
    from tests.train.conftest import config_dict

    _, out = data
    settings = config_dict(tmp_path, out)
    settings["data"]["valid_file"] = str(out)
    prepared = prepare_data(RunConfig.from_dict(settings))
    assert isinstance(prepared.train, OnDiskDataset) and isinstance(prepared.valid, OnDiskDataset)
    assert len(prepared.train) == len(prepared.valid) == 23
    assert prepared.statistics.force_rms == prepared.train.manifest["statistics"]["force_rms"]


def test_a_directory_tagged_and_joined_reads_the_graphs_of_its_tagged_xyz(data, write_frames):
    from equiforce.data.mixing import JoinedDataset, concatenate, retype, tag

    xyz, out = data
    other = write_frames(_frames(5, seed=1), "other.xyz")
    names = ("Cu", "Au")
    memory = [retype(load_dataset(p, R_MAX, require_energy=False, require_forces=False), names)
              for p in (xyz, other)]  # fmt: skip
    want = concatenate([tag(memory[0], 0, 2.5), tag(memory[1], 1, 1.0)])
    got = concatenate([tag(OnDiskDataset(out).retype(names), 0, 2.5), tag(memory[1], 1, 1.0)])
    assert isinstance(got, JoinedDataset) and len(got) == len(want) == 28
    for k in range(len(want)):
        _assert_same_graph(got[k], want[k])
    view = tag(OnDiskDataset(out).retype(names), 0, 2.5).subset([3, 1])  # views keep the tag
    _assert_same_graph(view[0], want[3])
    expected = compute_statistics(want, R_MAX)
    streamed = got.accumulate().statistics(names)
    assert streamed.type_names == expected.type_names and streamed.n_configs == 28
    for field in ("atomic_energies", "avg_num_neighbors", "force_rms", "mean_interaction_energy"):
        assert getattr(streamed, field) == pytest.approx(getattr(expected, field), rel=1e-10)
    with pytest.raises(IndexError, match="index 28 out of range"):
        got[28]


def test_a_directory_in_train_files_trains_as_its_xyz_with_weight_and_per_file_metrics(
    tmp_path, data, write_frames
):
    from equiforce.models.io import load_model
    from equiforce.train.config import RunConfig
    from equiforce.train.run import train
    from tests.train.conftest import config_dict

    xyz, out = data
    other = write_frames(_frames(6, seed=1), "other.xyz")
    runs = {}
    for name, source in (("xyz", xyz), ("dir", out)):
        settings = config_dict(tmp_path / name, xyz, max_epochs=2)
        settings["training"]["stage_two"] = {"enabled": False}
        del settings["data"]["train_file"]
        settings["data"]["train_files"] = [
            {"path": str(source), "weight": 2.0, "name": "big"},
            {"path": str(other), "name": "small"},
        ]
        runs[name] = train(RunConfig.from_dict(settings))
    want = load_model(runs["xyz"].model_path).state_dict()
    got = load_model(runs["dir"].model_path).state_dict()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-12, msg=name)
    metrics = runs["dir"].final_metrics
    for key in ("valid_big_forces_rmse", "valid_small_energy_rmse", "train_loss"):
        assert metrics[key] == pytest.approx(runs["xyz"].final_metrics[key], rel=1e-9), key

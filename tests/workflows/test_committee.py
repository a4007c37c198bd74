"""equiforce committee: N members of one run file, differing by seed and training subset."""

from __future__ import annotations

import json

import pytest
from ase.io import read, write

from equiforce.cli.main import main
from equiforce.md.committee import CommitteeCalculator
from equiforce.models import load_model
from equiforce.testing.structures import emt_labelled, make_fcc_cu
from equiforce.train.config import RunConfig
from equiforce.typed_config import ConfigError
from equiforce.workflows.committee import CommitteeConfig, member_config, train_committee
from tests.train.conftest import config_dict


@pytest.fixture(scope="module")
def emt_train_file(tmp_path_factory):
    """12 rattled 4-atom Cu/Au cells with EMT labels."""
    path = tmp_path_factory.mktemp("data") / "train.xyz"
    write(path, [emt_labelled(make_fcc_cu(repeat=1, seed=s, rattle=0.1)) for s in range(12)])
    return path


def _run(tmp_path, train_file) -> RunConfig:
    values = config_dict(tmp_path / "committee", train_file, max_epochs=1)
    values["training"]["stage_two"] = {"enabled": False}
    return RunConfig.from_dict(values)


def test_members_differ_by_seed_and_subset(tmp_path, emt_train_file):
    """Two members: own seeds, own subsets, distinct weights; a rerun resumes, not repeats."""
    run = _run(tmp_path, emt_train_file)
    settings = CommitteeConfig(size=2, subsample=0.5)
    result = train_committee(run, settings)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["seeds"] == [run.seed, run.seed + 1]
    assert manifest["members"] == ["member_0/model.pt", "member_1/model.pt"]
    subsets = [read(m["train_file"], index=":") for m in result.members]
    assert [len(s) for s in subsets] == [6, 6]  # half of the 12 frames
    assert [a.positions.tolist() for a in subsets[0]] != [a.positions.tolist() for a in subsets[1]]
    first, second = (load_model(p) for p in result.model_paths)
    weights = [next(iter(m.state_dict().values())) for m in (first, second)]
    assert not weights[0].equal(weights[1])
    atoms = read(emt_train_file, index=0)
    atoms.calc = CommitteeCalculator.from_paths([result.output_dir])
    atoms.get_forces()
    assert atoms.calc.results["force_uncertainty"].max() > 0
    # a rerun refuses the existing runs; --resume skips the finished members
    with pytest.raises(FileExistsError):
        train_committee(run, CommitteeConfig(size=3))
    again = train_committee(run, CommitteeConfig(size=2, subsample=0.5), resume=True)
    assert again.model_paths == result.model_paths


def test_subsampling_several_training_files_subsamples_each(tmp_path, emt_train_file):
    """With data.train_files each weighted file is subsampled; its metric name stays."""
    values = config_dict(tmp_path / "committee", emt_train_file, max_epochs=1)
    values["training"]["stage_two"] = {"enabled": False}
    data = values["data"]
    data["train_files"] = [
        {"path": str(data.pop("train_file")), "weight": 1.0, "name": "main"},
        {"path": str(emt_train_file), "weight": 0.5, "name": "replay"},
    ]
    data.pop("valid_file", None)
    member = member_config(RunConfig.from_dict(values), CommitteeConfig(size=2, subsample=0.5), 1)
    entries = member.data.train_files
    assert [e.label for e in entries] == ["main", "replay"]
    assert [e.weight for e in entries] == [1.0, 0.5]
    assert [len(read(e.path, index=":")) for e in entries] == [6, 6]


def test_members_train_in_parallel_processes(tmp_path, emt_train_file):
    """workers=2: both members train in spawned processes (~10 s of process start-up)."""
    run = _run(tmp_path, emt_train_file)
    result = train_committee(run, CommitteeConfig(size=2, workers=2, threads_per_worker=1))
    assert [m["epochs"] for m in result.members] == [1, 1]
    assert all(path.exists() for path in result.model_paths)


def test_cli_trains_a_committee(tmp_path, emt_train_file):
    """``equiforce committee config.yaml --size 2`` writes the members and the manifest."""
    run = _run(tmp_path, emt_train_file)
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps(run.to_dict()))
    assert main(["committee", str(config), "--size", "2"]) == 0
    assert (tmp_path / "committee" / "member_1" / "model.pt").exists()
    assert main(["committee", str(config), "--size", "1"]) == 2


def test_member_config_and_errors(tmp_path, emt_train_file):
    """Member k: seed + k, its own folder, fine-tuning weights; bad settings name the key."""
    run = _run(tmp_path, emt_train_file)
    member = member_config(run, CommitteeConfig(size=2), 1, init_model="start.pt")
    assert member.seed == run.seed + 1 and member.output_dir.endswith("member_1")
    assert member.training.init_model == "start.pt"
    assert member.data.train_file == run.data.train_file
    with pytest.raises(ConfigError, match="committee.subsample"):
        CommitteeConfig.from_dict({"subsample": 1.5})
    with pytest.raises(ConfigError, match="committee.sise"):
        CommitteeConfig.from_dict({"sise": 3})

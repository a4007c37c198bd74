"""``equiforce bench --train-step`` and ``--peers``: options, the peer's python, a training step
with its optimiser, and the peer worker in its own venv on our weights."""

from __future__ import annotations

import copy
import json
import shlex

import pytest
import torch

from equiforce.cli.bench import command_line, config_from_args
from equiforce.cli.main import build_parser, main
from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.models import save_model
from equiforce.testing.models import tiny_mace
from equiforce.workflows.bench import peers
from equiforce.workflows.bench.kinds import potential_call, step_loss
from equiforce.workflows.bench.report import RATIO_HEADER, ratio_rows
from equiforce.workflows.bench.run import BenchConfig, run_bench
from equiforce.workflows.bench.systems import make_system

TYPES = ("H", "C", "O")


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(tiny_mace(torch.float64, type_names=TYPES), path)
    return path


def test_train_step_and_peer_options_parse_into_the_config_and_back_into_the_command():
    argv = ["bench", "--preset", "mace-small", "--train-step", "--peers", "--systems"]
    argv += ["molecule", "batch5", "box-300", "--threads", "1", "--mace-python", "/x/python"]
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    assert (config.kind, config.peers, config.threads) == ("train-step", True, 1)
    assert config.systems == ("molecule", "batch5", "box-300")
    assert config.peer_python == {"mace-torch": "/x/python"}
    command = command_line(args)
    assert command.startswith("equiforce bench --preset mace-small --systems molecule batch5")
    again = build_parser().parse_args(shlex.split(command)[1:])
    assert vars(again) == {**vars(args), "run": again.run}
    plain = config_from_args(build_parser().parse_args(["bench", "--preset", "mace-small"]))
    assert (plain.kind, plain.peers) == ("inference", False)
    with pytest.raises(ValueError, match="--exported: .* inference only, not 'train-step'"):
        config_from_args(build_parser().parse_args([*argv[:4], "--exported", "reference"]))


def test_a_bad_peer_python_is_refused_naming_the_option(tmp_path, monkeypatch, capsys):
    mace = peers.PEERS["mace-torch"]
    monkeypatch.delenv(mace.env_var, raising=False)
    with pytest.raises(FileNotFoundError, match="--mace-python /nowhere/python: does not exist"):
        peers.peer_python(mace, "/nowhere/python")
    with pytest.raises(FileNotFoundError, match="is not an executable file"):
        peers.peer_python(mace, str(tmp_path))
    monkeypatch.setenv(mace.env_var, "/nowhere/else")
    with pytest.raises(FileNotFoundError, match=r"\$EQUIFORCE_MACE_PYTHON /nowhere/else: does"):
        peers.peer_python(mace, None)
    monkeypatch.delenv(mace.env_var)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("equiforce.measure.machine.source_root", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="no mace-torch python found .* --mace-python"):
        peers.peer_python(mace, None)
    argv = ["bench", "--preset", "allegro-tiny", "--peers", "--nequip-python", str(tmp_path)]
    assert main([*argv, "--out", str(tmp_path / "never")]) == 2
    assert f"--nequip-python {tmp_path}: is not an executable file" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def _batch(model) -> dict[str, torch.Tensor]:
    return collate(
        [
            configuration_to_graph(atoms_to_configuration(a), model.type_names, model.r_max)
            for a in make_system("batch2", seed=1)
        ]
    )


def test_a_training_step_is_the_force_loss_backward_and_one_amsgrad_adam_step():
    model = tiny_mace(torch.float64, type_names=TYPES)
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    reference = copy.deepcopy(model)
    batch = _batch(model)
    step = potential_call(model, batch, "train-step")
    energy, forces = step()
    assert model.training
    # the reference: the same loss, backward and torch's Adam as equiforce train builds it
    reference.train()
    out = reference(batch, compute_forces=True, create_graph=True)
    torch.testing.assert_close(energy, out["energy"].detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(forces, out["forces"].detach(), rtol=0, atol=1e-12)
    step_loss(out["energy"], out["forces"]).backward()
    adam = torch.optim.Adam(reference.parameters(), lr=0.01, weight_decay=5e-7, amsgrad=True)
    adam.step()
    for (name, got), expected in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12, msg=name)
    assert all(not torch.equal(p, initial[n]) for n, p in model.named_parameters())
    # the next call starts from the updated weights (nothing cached from the first ones)
    second, _ = step()
    fresh = reference(batch, compute_forces=True, create_graph=True)["energy"].detach()
    torch.testing.assert_close(second, fresh, rtol=0, atol=1e-12)
    assert (second - energy).abs().max() > 1e-6


def _mace_python() -> str | None:
    """The mace-torch venv's python as ``--peers`` finds it, or None without the venv."""
    try:
        return peers.peer_python(peers.PEERS["mace-torch"], None)
    except FileNotFoundError:
        return None


def _check_parity(result: dict, kind: str, dtype: str, energy_tol: float, force_tol: float):
    """The mace-torch worker ran ``kind`` on our batch and agrees with ours to the tolerances
    (eV per atom; relative to the largest force, ~30 eV/Å on these random weights)."""
    assert result["failed"] == {}
    theirs = result["implementations"]["mace-torch"]["info"]
    assert theirs["kind"] == kind and theirs["n_edges"] == result["n_edges"]
    assert theirs["dtype"] == dtype and theirs["version"]
    parity = result["ratios"]["mace-torch"]["parity"]
    assert parity["max_abs_force_eV_per_A"] > 0.01
    assert parity["max_abs_energy_diff_per_atom_eV"] < energy_tol
    assert parity["max_abs_force_diff_eV_per_A"] < force_tol * parity["max_abs_force_eV_per_A"]


def test_bench_train_step_on_a_tiny_model_and_against_mace_torch_when_its_venv_exists(
    tiny_model_file, tmp_path
):
    """One CLI run: our training step timed; with the mace venv also the peer's, its ratio
    row, and its float64 parity on the same weights (the venv is found as --peers finds it)."""
    python = _mace_python()
    out = tmp_path / "bench"
    argv = ["bench", str(tiny_model_file), "--systems", "molecule", "--precision", "float64"]
    argv += ["--peers", "--train-step"] if python else ["--train-step"]
    argv += ["--repeats", "2", "--warmup", "0", "--threads", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["settings"]["kind"] == "train-step"
    assert report["command"] == shlex.join(["equiforce", *argv])
    (result,) = report["results"]
    ours = result["implementations"]["equiforce"]
    assert ours["info"]["kind"] == "train-step" and len(ours["times_ms"]) == 2
    assert len(result["load_avg"]) == 3
    if python is None:
        assert result["ratios"] == {} and not (out / "ratios.md").exists()
        return
    _check_parity(result, "train-step", "float64", 1e-12, 1e-12)
    header, rule, row = (out / "ratios.md").read_text().splitlines()
    assert f"{header}\n{rule}" == RATIO_HEADER and row.count("|") == header.count("|")
    assert "| float64 | train-step | molecule (15) |" in row and "| mace-torch |" in row
    assert row == ratio_rows(report, report["command"])[0]


@pytest.mark.slow  # two worker processes, one of them importing mace-torch (~10-30 s)
def test_the_peer_worker_in_its_venv_computes_our_float32_energies_on_the_same_weights(tmp_path):
    python = _mace_python()
    if python is None:
        pytest.skip("no mace-torch venv here (make install-mace)")
    save_model(tiny_mace(torch.float32, type_names=TYPES), tmp_path / "model.pt")
    config = BenchConfig(
        model=str(tmp_path / "model.pt"),
        systems=("batch2",),
        precision="float32",
        peers=True,
        repeats=1,
        warmup=0,
        threads=1,
        peer_python={"mace-torch": python},
    )
    (result,) = run_bench(config, log=lambda line: None)["results"]
    _check_parity(result, "inference", "float32", 1e-5, 1e-5)

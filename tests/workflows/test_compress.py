"""``equiforce compress``: a tiny EMT-trained teacher compressed end to end, killed and resumed;
an impossible tolerance refused with the best errors; ``--plan`` prints without training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase.io import write

from equiforce.cli.main import main
from equiforce.data.extxyz import read_configurations
from equiforce.models import load_model
from equiforce.testing.structures import emt_labelled, make_fcc_cu
from equiforce.train.config import RunConfig
from equiforce.train.evaluate import evaluate
from equiforce.train.run import train
from equiforce.workflows.bench.peers import PEERS, peer_python
from equiforce.workflows.compress import CompressConfig, CompressRefused, compress
from equiforce.workflows.compress.targets import target_frames
from tests.train.conftest import TINY_MACE

TEACHER = {**TINY_MACE, "num_channels": 8}


class Stop(Exception):
    """Raised by a test's ``on_step`` to simulate a kill after a step."""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """EMT-labelled 4-atom Cu cells (train 16, valid 4, test 4) and a teacher trained on them."""
    folder = tmp_path_factory.mktemp("compress")
    frames = [
        emt_labelled(make_fcc_cu(repeat=1, seed=s, rattle=0.1, au_fraction=0.0)) for s in range(24)
    ]
    paths = {name: folder / f"{name}.xyz" for name in ("train", "valid", "test")}
    write(paths["train"], frames[:16])
    write(paths["valid"], frames[16:20])
    write(paths["test"], frames[20:])
    run = RunConfig.from_dict(
        {
            "output_dir": str(folder / "teacher"),
            "seed": 0,
            "data": {
                "train_file": str(paths["train"]),
                "valid_file": str(paths["valid"]),
                "batch_size": 4,
            },
            "model": TEACHER,
            "training": {
                "max_epochs": 15,
                "stress_weight": 0.0,
                "device": "cpu",
                "progress_bar": False,
            },
        }
    )
    paths["model"] = train(run).model_path
    return paths


def _config(files, out: Path, **changes) -> CompressConfig:
    values = dict(
        model=str(files["model"]),
        train_file=str(files["train"]),
        valid_file=str(files["valid"]),
        test_file=str(files["test"]),
        force_tol=1e6,
        out=str(out),
        modes=("float64", "float32"),
        backends=("fast",),
        compile=False,
        export=False,
        ladder=({"num_channels": 4},),
        student_epochs=4,
        budget_s=60.0,
        min_student_s=30.0,
        augment={"rattle": {"scales": [0.05], "copies": 1}, "md": {"temperatures": []}},
        md_steps=5,
        warmup=1,
        repeats=2,
    )
    values.update(changes)
    return CompressConfig(**values)


@pytest.fixture(scope="module")
def resumed(files, tmp_path_factory):
    """A search killed after the input's precision audit, then resumed to the end (timing
    the input in mace-torch too where it is installed)."""
    out = tmp_path_factory.mktemp("search")
    teacher_force_rmse = _valid_force_rmse(files["model"], files["valid"])
    try:  # the peer's timing joins the search where mace-torch is installed
        peer = {"peer": True, "peer_python": {"mace-torch": peer_python(PEERS["mace-torch"], None)}}
    except FileNotFoundError:
        peer = {}
    config = _config(files, out, force_tol=2.0 * teacher_force_rmse, **peer)
    first: list[str] = []

    def kill(step: str) -> None:
        first.append(step)
        if step == "input:precision":
            raise Stop(step)

    with pytest.raises(Stop):
        compress(config, progress=False, on_step=kill)
    again: list[str] = []
    result = compress(config, resume=True, progress=False, on_step=again.append)
    return config, result, first, again


def _valid_force_rmse(model_file, data_file) -> float:
    metrics = evaluate(load_model(model_file), read_configurations(data_file)).metrics
    return metrics["forces"].rmse


def test_search_resumes_after_a_kill_without_redoing_finished_steps(resumed):
    """The resumed run continues from the state file: the audit is not redone."""
    config, result, first, again = resumed
    assert first == ["plan", "input:precision"]
    assert "input:precision" not in again and "plan" not in again
    assert again[0] == "input:speed:float64"
    assert {"labels", "student:num_channels-4", "num_channels-4:precision"} <= set(again)
    state = json.loads((Path(config.out) / "state.json").read_text())
    assert set(first) | set(again) == set(state["steps"])


def test_chosen_model_is_within_tolerance_on_held_out_data(resumed, files):
    """The chosen candidate passes on validation, its model file reproduces its errors,
    and it is the fastest accepted candidate; the report lists every candidate."""
    config, result, _, _ = resumed
    chosen = result.chosen
    assert chosen["accepted"] and chosen["valid_forces_rmse"] <= config.force_tol
    accepted = [r for r in result.candidates if r["accepted"]]
    assert chosen["ms_per_call"] == min(r["ms_per_call"] for r in accepted)
    model = load_model(result.model_path)
    for name, key in (("valid", "valid_forces_rmse"), ("test", "test_forces_rmse")):
        metrics = evaluate(model, read_configurations(files[name])).metrics
        assert metrics["forces"].rmse == pytest.approx(chosen[key], rel=1e-6)
    assert metrics["forces"].rmse <= config.force_tol  # held-out test frames too
    models = {r["model"] for r in result.candidates}
    assert models == {"input", "num_channels-4"}
    modes = {r["mode"] for r in result.candidates if r["model"] == "input"}
    assert "float64" in modes
    baseline = [r for r in result.candidates if r["speedup"] == pytest.approx(1.0)]
    assert baseline and all(r["ms_per_call"] > 0 for r in result.candidates)
    report = json.loads(result.reports["json"].read_text())
    assert report["summary"]["chosen"] == chosen["name"]
    assert len(report["candidates"]) == len(result.candidates)
    assert result.reports["plot"].stat().st_size > 0
    assert chosen["name"] in result.reports["markdown"].read_text()


def test_impossible_tolerance_is_refused_with_the_best_errors(files, tmp_path):
    """No candidate within 1e-6 meV/Å: CompressRefused names the best validation errors."""
    config = _config(
        files, tmp_path / "refused", force_tol=1e-6, energy_tol=1e-6, modes=("float64",), ladder=()
    )
    with pytest.raises(CompressRefused) as refused:
        compress(config, progress=False)
    best_force = _valid_force_rmse(files["model"], files["valid"])
    message = str(refused.value)
    assert "best validation force RMSE" in message and "best validation energy RMSE" in message
    assert f"{best_force:.4g}" in message
    assert refused.value.best["forces"][1] == pytest.approx(best_force, rel=1e-9)
    assert (tmp_path / "refused" / "report.md").exists()
    assert not (tmp_path / "refused" / "model.pt").exists()


def test_plan_prints_the_search_without_training(files, tmp_path, capsys):
    """``equiforce compress --plan``: stages, rungs and estimates printed, nothing written."""
    out = tmp_path / "planned"
    status = main(
        [
            *("compress", str(files["model"])),
            *("--data", str(files["train"]), "--valid", str(files["valid"])),
            *("--force-tol", "50", "--out", str(out), "--plan", "--budget-s", "600"),
            *("--ladder", '[{"num_channels": 4}]'),
        ]
    )
    text = capsys.readouterr().out
    assert status == 0
    assert "precision audit" in text and "free speed" in text and "num_channels=4" in text
    assert "estimated total" in text and "each student trains for" in text
    assert not out.exists()


def test_md_box_replicates_the_structure_and_batch_cycles_the_structures(files):
    """The md-box target of a periodic cell repeats it; batch cycles the user's frames."""
    from ase.io import read

    frames = read(files["train"], ":")
    box = target_frames("md-box", frames, box_atoms=100)[0]
    assert len(box) == 4 * 27 and np.allclose(box.cell.array, 3 * frames[0].cell.array)
    batch = target_frames("batch", frames, batch_size=20)
    assert len(batch) == 20 and np.allclose(batch[17].positions, frames[1].positions)


def test_peer_times_the_inputs_weights_beside_the_input(resumed):
    """``peer``: mace-torch runs the input's weights interleaved with the input eager; the
    report gives the chosen model's speed-up over it."""
    config, result, _, _ = resumed
    if not config.peer:
        pytest.skip("no mace-torch python (make install-mace)")
    state = json.loads((Path(config.out) / "state.json").read_text())
    timing = state["steps"]["input:peer"]
    assert timing["peer"] == "mace-torch" and timing["peer_ms"] > 0 and timing["input_ms"] > 0
    summary = json.loads(result.reports["json"].read_text())["summary"]
    assert summary["peer"].startswith("mace-torch on the input's weights")
    ratio = timing["peer_ms"] / result.chosen["ms_per_call"]
    assert summary["speedup_over_peer"] == f"{ratio:.2f}x over mace-torch on the input's weights"
    assert "speedup_over_peer" in result.reports["markdown"].read_text()


def test_a_missing_peer_python_is_refused_before_the_search(files, tmp_path):
    config = _config(
        files, tmp_path / "o", ladder=(), peer=True, peer_python={"mace-torch": "/no/python"}
    )
    with pytest.raises(FileNotFoundError, match="--mace-python /no/python: does not exist"):
        compress(config, progress=False)
    assert not (tmp_path / "o" / "state.json").exists() or "input:precision" not in (
        json.loads((tmp_path / "o" / "state.json").read_text())["steps"]
    )

"""Data-parallel training (``torchrun -m equiforce train``) on 2 CPU ranks with gloo.

* 2 ranks x 2 structures equal 1 rank x 4 (the same run file: ``data.batch_size`` is global),
  weights after every step to float64 rounding, with a short last batch that leaves rank 1
  empty;
* a rank killed mid-epoch stops the other at once with a clear error, and ``--resume`` on 2
  ranks ends bit for bit where the uninterrupted 2-rank run ends; a 2-rank run resumes on 1;
* a hung rank stops the other after ``--distributed-timeout`` seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from equiforce.data.dataset import load_dataset, make_loader
from equiforce.data.statistics import compute_statistics
from equiforce.testing.tolerances import TOL
from equiforce.testing.torchrun import torchrun_equiforce
from equiforce.train.checkpoint import load_checkpoint
from equiforce.train.config import ModelConfig, RunConfig
from equiforce.train.distributed import World, open_world, rank_batches, sharded_loss
from equiforce.train.losses import energy_forces_stress_loss
from equiforce.train.metrics import read_metrics_csv
from equiforce.train.run import TrainResult, train
from equiforce.train.setup import build_model_from_config

from .conftest import TINY_MACE, config_dict

STEPS_PER_EPOCH = 3  # 9 training structures in global batches of 4, 4 and 1

# A rank of the test: counts its optimizer steps in a file (after each EMA update, without
# touching the numbers) so that the parent can kill or stop it at a known point.
_RANK = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from equiforce.cli.main import main
    from equiforce.train import ema

    steps_file = Path(sys.argv[1])
    update = ema.ExponentialMovingAverage.update

    def counting_update(self, model):
        update(self, model)
        steps_file.write_text(f"{self.num_updates}\\n")

    ema.ExponentialMovingAverage.update = counting_update
    sys.exit(main(sys.argv[2:]))
    """
)


def _run_file(tmp_path: Path, train_file: Path, name: str) -> Path:
    """A run file over the tiny MACE, global batch 4, in ``tmp_path / name``."""
    values = config_dict(tmp_path / name, train_file)
    values["data"]["batch_size"] = 4
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn_ranks(run_file: Path, folder: Path, *args: str) -> list[subprocess.Popen]:
    """Two ranks of ``equiforce train run_file`` with torchrun's environment variables."""
    port = str(_free_port())
    ranks = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "OMP_NUM_THREADS": "1",
        }
        command = [sys.executable, "-c", _RANK, str(folder / f"steps{rank}.txt")]
        with open(folder / f"rank{rank}.log", "wb") as log:
            command += ["train", str(run_file), *args]
            ranks.append(subprocess.Popen(command, env=env, stdout=log, stderr=log))
    return ranks


def _steps_done(folder: Path, rank: int) -> int:
    path = folder / f"steps{rank}.txt"
    text = path.read_text() if path.exists() else ""
    return int(text) if text.endswith("\n") else 0


def _wait_for_step(ranks: list[subprocess.Popen], folder: Path, rank: int, step: int) -> None:
    deadline = time.monotonic() + 120.0
    while _steps_done(folder, rank) < step:
        for k, process in enumerate(ranks):
            assert process.poll() is None, (folder / f"rank{k}.log").read_text()
        assert time.monotonic() < deadline, "the ranks are too slow"
        time.sleep(0.005)


def _exit_within(process: subprocess.Popen, seconds: float) -> float:
    """Seconds the process took to exit (fails if it is still running after ``seconds``)."""
    start = time.monotonic()
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pytest.fail(f"rank 0 still runs {seconds} s after the other rank failed (a hang)")
    return time.monotonic() - start


def _end_all(ranks: list[subprocess.Popen]) -> None:
    for process in ranks:
        process.kill()
        process.wait()


def _assert_close_states(actual: dict, expected: dict) -> None:
    for name, value in expected.items():
        assert torch.allclose(
            actual[name], value, rtol=TOL.fp64.rtol, atol=TOL.fp64.atol * value.abs().max()
        ), name


def _torchrun_train(run_file: Path) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m equiforce train run_file``, one thread per rank."""
    return torchrun_equiforce("train", str(run_file), timeout_s=300)


def _two_ranks_and_one(tmp_path: Path, values: dict) -> tuple[dict, TrainResult]:
    """The run ``values`` (output in ``tmp_path / "two"``) on 2 ranks, then on 1 in this
    process (``tmp_path / "one"``), whose weights it must end with: the 2-rank run's last
    checkpoint and the 1-rank run's result."""
    run_file = tmp_path / "two.yaml"
    run_file.write_text(yaml.safe_dump(values))
    _torchrun_train(run_file)
    one_rank = train(RunConfig.from_dict({**values, "output_dir": str(tmp_path / "one")}))
    expected = load_checkpoint(one_rank.last_checkpoint)
    actual = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    assert actual["world_size"] == 2
    _assert_close_states(actual["train_state_dict"], expected["train_state_dict"])
    return actual, one_rank


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory, emt_train_file) -> Path:
    """An uninterrupted 3-epoch run of the real command on 2 ranks: its output folder."""
    folder = tmp_path_factory.mktemp("two_ranks")
    done = _torchrun_train(_run_file(folder, emt_train_file, "run"))
    assert "training.world: 2 ranks (gloo" in done.stderr
    assert "global batch 4 = 2 ranks x 2" in done.stderr
    assert done.stdout.count("model: ") == 1, "rank 1 must print nothing"
    return folder / "run"


def test_two_ranks_of_batch_two_equal_one_rank_of_batch_four(
    tmp_path, emt_train_file, two_rank_run
):
    one_rank = train(RunConfig.from_dict(yaml.safe_load(
        _run_file(tmp_path, emt_train_file, "one").read_text()
    )))  # fmt: skip
    expected = load_checkpoint(one_rank.last_checkpoint)
    actual = load_checkpoint(two_rank_run / "checkpoints" / "last.pt")
    assert actual["world_size"] == 2 and expected["world_size"] == 1
    assert actual["ema"]["num_updates"] == 3 * STEPS_PER_EPOCH
    _assert_close_states(actual["train_state_dict"], expected["train_state_dict"])
    _assert_close_states(actual["ema"]["shadow"], expected["ema"]["shadow"])
    rows, want = (
        read_metrics_csv(two_rank_run / "metrics.csv"),
        read_metrics_csv(one_rank.metrics_csv),
    )
    assert len(rows) == len(want) == 3
    for got, row in zip(rows, want, strict=True):
        for name in ("train_loss", "valid_loss", "train_forces_rmse", "valid_energy_rmse"):
            assert got[name] == pytest.approx(row[name], rel=TOL.fp64.rtol), name


def test_two_ranks_train_a_preprocessed_directory_among_train_files_as_one_rank(
    tmp_path, emt_train_file
):
    """``data.train_files`` = [a preprocessed directory (weight 2), an xyz file]: 2 ranks x 2
    structures give 1 rank x 4's weights and per-file validation metrics."""
    from equiforce.data.ondisk import preprocess

    preprocess(emt_train_file, tmp_path / "pre", None, 4.0, shard_size=5)
    values = yaml.safe_load(_run_file(tmp_path, emt_train_file, "two").read_text())
    del values["data"]["train_file"]
    values["data"]["train_files"] = [
        {"path": str(tmp_path / "pre"), "weight": 2.0, "name": "disk"},
        {"path": str(emt_train_file), "name": "memory"},
    ]
    values["training"].update(max_epochs=2, stage_two={"enabled": False})
    _, one_rank = _two_ranks_and_one(tmp_path, values)
    got = read_metrics_csv(tmp_path / "two" / "metrics.csv")[-1]
    want = read_metrics_csv(one_rank.metrics_csv)[-1]
    for name in ("train_loss", "valid_disk_forces_rmse", "valid_memory_energy_rmse"):
        assert got[name] == pytest.approx(want[name], rel=TOL.fp64.rtol), name


def test_two_ranks_fine_tune_with_frozen_parts_as_one_rank(tmp_path, emt_train_file, two_rank_run):
    """Fine-tuning the 2-rank run's model with its embeddings and first layer frozen and the
    readouts at a tenth of the rate: the frozen parameters have no gradient on any rank and
    stay out of the reduction; 2 ranks x 2 give 1 rank x 4's weights, the frozen ones those
    of the starting model."""
    from equiforce.models.io import load_model
    from equiforce.train.finetune import model_parts

    start = two_rank_run / "model.pt"
    values = yaml.safe_load(_run_file(tmp_path, emt_train_file, "two").read_text())
    values["training"].update(
        init_model=str(start),
        max_epochs=1,
        stage_two={"enabled": False},
        finetune={"freeze": ["embeddings", "layer_0"], "lr_scale": {"readouts": 0.1}},
    )
    actual, _ = _two_ranks_and_one(tmp_path, values)
    before = load_model(start).state_dict()
    after = actual["train_state_dict"]
    for part, members in model_parts(load_model(start)).items():
        changed = [not torch.equal(before[name], after[name]) for name, _ in members]
        assert not any(changed) if part in ("embeddings", "layer_0") else all(changed), part


def test_a_two_rank_run_resumes_on_one_rank(tmp_path, emt_train_file, two_rank_run):
    """Checkpoints do not depend on the world size: 3 epochs on 2 ranks + 1 on 1 rank equal
    4 epochs on 1 rank (to float64 rounding)."""
    copy = tmp_path / "copy"
    shutil.copytree(two_rank_run, copy)
    values = yaml.safe_load((two_rank_run / "config.yaml").read_text())
    values["output_dir"], values["training"]["max_epochs"] = str(copy), 4
    resumed = train(RunConfig.from_dict(values), resume=True)
    values["output_dir"] = str(tmp_path / "one")
    one_rank = train(RunConfig.from_dict(values))
    actual, expected = (load_checkpoint(r.last_checkpoint) for r in (resumed, one_rank))
    assert actual["world_size"] == 1 and actual["progress"]["epochs_done"] == 4
    _assert_close_states(actual["train_state_dict"], expected["train_state_dict"])
    _assert_close_states(actual["ema"]["shadow"], expected["ema"]["shadow"])


def test_a_killed_rank_stops_the_other_and_the_run_resumes_exactly(
    tmp_path, emt_train_file, two_rank_run
):
    run_file = _run_file(tmp_path, emt_train_file, "run")
    ranks = _spawn_ranks(run_file, tmp_path)
    try:
        _wait_for_step(ranks, tmp_path, 1, STEPS_PER_EPOCH + 1)
        os.kill(ranks[1].pid, signal.SIGKILL)
        _exit_within(ranks[0], 30.0)
    finally:
        _end_all(ranks)
    assert ranks[0].returncode == 1
    message = (tmp_path / "rank0.log").read_text()
    assert "equiforce train (rank 0 of 2): error: rank 0 of 2: " in message
    assert "another rank has died" in message and "--resume" in message
    at_kill = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert at_kill["progress"]["epochs_done"] == 1, "the kill did not land inside epoch 2"

    resumed = _spawn_ranks(run_file, tmp_path, "--resume")
    try:
        for process in resumed:
            process.wait(timeout=300)
    finally:
        _end_all(resumed)
    assert [p.returncode for p in resumed] == [0, 0], (tmp_path / "rank0.log").read_text()
    expected = load_checkpoint(two_rank_run / "checkpoints" / "last.pt")
    actual = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    for section in ("train_state_dict", "model"):
        got = actual[section].get("state_dict", actual[section])
        for name, value in expected[section].get("state_dict", expected[section]).items():
            assert torch.equal(got[name], value), (section, name)
    for name, value in expected["ema"]["shadow"].items():
        assert torch.equal(actual["ema"]["shadow"][name], value), name


def test_a_hung_rank_stops_the_other_after_the_timeout(tmp_path, emt_train_file):
    run_file = _run_file(tmp_path, emt_train_file, "run")
    ranks = _spawn_ranks(run_file, tmp_path, "--distributed-timeout", "2")
    try:
        _wait_for_step(ranks, tmp_path, 1, 1)
        os.kill(ranks[1].pid, signal.SIGSTOP)
        waited = _exit_within(ranks[0], 30.0)
    finally:
        _end_all(ranks)
    assert ranks[0].returncode == 1 and waited >= 1.0
    message = (tmp_path / "rank0.log").read_text()
    assert "hung for more than the timeout (2 s, --distributed-timeout)" in message


def test_rank_shares_of_each_global_batch_are_make_loaders_batch(emt_train_file):
    dataset = load_dataset(emt_train_file, 4.0)
    worlds = [World(rank=r, size=3) for r in range(3)]
    shares = [rank_batches(len(dataset), 6, w, shuffle=True, seed=5, epoch=2) for w in worlds]
    loader = make_loader(dataset, 6, shuffle=True, seed=5, epoch=2)
    order = list(loader.sampler)
    assert [len(s) for s in shares] == [2, 2, 2]  # 12 structures: two global batches
    for b, parts in enumerate(zip(*shares, strict=True)):
        assert [i for part in parts for i in part] == order[6 * b : 6 * (b + 1)]
        assert [len(p) for p in parts] == [2, 2, 2]
    short = [rank_batches(5, 4, w, shuffle=False) for w in worlds]
    assert [s[-1] for s in short] == [[4], [], []]  # the short last batch empties ranks 1, 2


def test_global_batch_must_be_a_multiple_of_the_world_size():
    with pytest.raises(ValueError, match="data.batch_size is 5, the global batch.*world size 2"):
        World(rank=0, size=2).per_rank_batch(5)


def test_one_rank_is_the_single_process_path(emt_train_file):
    assert "WORLD_SIZE" not in os.environ
    with open_world(torch.device("cpu")) as world:
        assert not world.distributed and world.is_main
        assert not torch.distributed.is_initialized()
    dataset = load_dataset(emt_train_file, 4.0)
    batch = next(iter(make_loader(dataset, 5, shuffle=False)))
    params = {k: v for k, v in TINY_MACE.items() if k != "family"}
    model = build_model_from_config(
        ModelConfig("mace", params), compute_statistics(dataset, 4.0), seed=0
    )
    pred = model(batch, compute_forces=True, compute_stress=True)
    loss_fn = energy_forces_stress_loss(1.0, 10.0, 1.0)
    share = sharded_loss(loss_fn, batch, pred, world, "test")
    assert torch.allclose(share, loss_fn(batch, pred), rtol=TOL.fp64.rtol, atol=0.0)

"""Smoke test of ``python -m benchmarks.ddp_throughput``: the run file, one 1-rank run, the
step phases.

The 2-rank path is ``tests/train/test_distributed.py``'s (the same command); the AcAc files
come from ``../shared/data`` (skipped without them).
"""

from __future__ import annotations

import pytest
import yaml

from benchmarks import acac
from benchmarks.common import DEFAULT_DATA_DIR
from benchmarks.ddp_throughput import LAUNCHERS, parse_args, run_file, train_once
from equiforce.train import RunConfig

pytestmark = pytest.mark.skipif(
    not (DEFAULT_DATA_DIR / "acac").exists(), reason=f"no AcAc data in {DEFAULT_DATA_DIR}"
)


def test_one_rank_run_of_the_smoke_case_reports_structures_per_second(tmp_path):
    args = parse_args(["--presets", "mace-tiny", "--smoke", "--out", str(tmp_path)])
    split = acac.write_split(args.data_dir, tmp_path, n_train=args.n_train, n_valid=args.n_valid)
    path = run_file(args, split, "mace-tiny", tmp_path / "mace-tiny_1rank")
    config = RunConfig.from_dict(yaml.safe_load(path.read_text()))
    assert config.data.batch_size == 4 and config.training.max_epochs == 2
    assert config.model.params["num_channels"] == 8 and config.model.params["dtype"] == "float32"
    assert LAUNCHERS[2][-4:] == ["--nproc_per_node", "2", "-m", "equiforce"]
    record = train_once(path, 1, args.n_train)
    assert "error" not in record, record.get("error")
    assert len(record["epoch_s"]) == 2 and record["structures_per_s"] > 0
    assert record["threads_per_rank"] == 1 and len(record["load_average_1min"]) == 2


def test_step_phases_of_the_smoke_case_time_every_phase(tmp_path):
    from benchmarks.ddp_throughput import step_phases

    args = parse_args(["--presets", "mace-tiny", "--smoke", "--out", str(tmp_path)])
    split = acac.write_split(args.data_dir, tmp_path, n_train=args.n_train, n_valid=args.n_valid)
    phases = step_phases(args, split, "mace-tiny", batch=2, repeats=1)
    assert set(phases) == {
        "collate", "forward_and_loss", "backward", "clip_grad_norm", "optimizer_fused",
        "optimizer_loop", "ema_update", "metrics",
    }  # fmt: skip
    assert all(value > 0.0 for value in phases.values()), phases

"""``equiforce train CONFIG [--resume]`` and the rules for fresh and resumed runs."""

from __future__ import annotations

import pytest
import yaml

from equiforce.cli import train as cli_train
from equiforce.train.config import load_config
from equiforce.train.metrics import read_metrics_csv
from equiforce.train.run import train

from .conftest import config_dict


def _write_config(path, output_dir, train_file, **training):
    values = config_dict(output_dir, train_file, stage_two={"enabled": False}, **training)
    path.write_text(yaml.safe_dump(values))
    return path


def test_cli_refuses_to_overwrite_and_resume_extends_the_run(tmp_path, emt_train_file, capsys):
    run = tmp_path / "run"
    one_epoch = _write_config(tmp_path / "one.yaml", run, emt_train_file, max_epochs=1)
    assert cli_train.main([str(one_epoch)]) == 0
    assert "max_epochs: 1 epochs" in capsys.readouterr().out
    assert cli_train.main([str(one_epoch)]) == 1
    assert "--resume" in capsys.readouterr().err

    changed = _write_config(tmp_path / "lr.yaml", run, emt_train_file, max_epochs=2, lr=0.02)
    with pytest.raises(ValueError, match="training.lr: 0.01 -> 0.02"):
        train(load_config(changed), resume=True)

    two_epochs = _write_config(tmp_path / "two.yaml", run, emt_train_file, max_epochs=2)
    assert cli_train.main([str(two_epochs), "--resume"]) == 0
    rows = read_metrics_csv(run / "metrics.csv")
    assert [row["epoch"] for row in rows] == [1.0, 2.0]
    assert (run / "model.pt").exists() and (run / "learning_curve.png").exists()

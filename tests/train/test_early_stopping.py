"""Early stopping (``training.early_stopping_patience``, mace-torch's ``--patience``)."""

from __future__ import annotations

import pytest

from equiforce.train.metrics import read_metrics_csv
from equiforce.train.run import train
from equiforce.typed_config import ConfigError

from .conftest import make_config

# A learning rate that moves no weight (below float64's resolution of the weights): the
# validation loss repeats itself, so only its first epoch is a new best.
FROZEN_LR = 1e-300


def test_patience_stops_training_or_hands_over_to_the_final_stage(tmp_path, emt_train_file):
    """With nothing to learn (``lr`` 1e-300) and a patience of 2: without a final stage the run
    stops before its 4th epoch (``stop_reason`` ``early_stopping``, 3 epochs of 8 done), and
    resumed with more epochs it stops again at once; with a final stage planned for epoch 7,
    that stage begins in epoch 4 instead, and a patience of 2 then counts from its start (also
    for a stage planned for epoch 4)."""
    frozen = {"lr": FROZEN_LR, "max_epochs": 8, "early_stopping_patience": 2}
    config = make_config(tmp_path / "alone", emt_train_file, **frozen, stage_two={"enabled": False})
    result = train(config)
    assert result.stop_reason == "early_stopping" and result.epochs_completed == 3
    assert result.best_epoch == 1
    longer = {**frozen, "max_epochs": 12}
    resumed = train(
        make_config(tmp_path / "alone", emt_train_file, **longer, stage_two={"enabled": False}),
        resume=True,
    )
    assert resumed.stop_reason == "early_stopping" and resumed.epochs_completed == 3

    stage_two = {"enabled": True, "start_epoch": 6, "lr": FROZEN_LR}
    handed = train(make_config(tmp_path / "handed", emt_train_file, **frozen, stage_two=stage_two))
    rows = read_metrics_csv(handed.metrics_csv)
    assert [row["stage"] for row in rows] == ["main"] * 3 + ["stage_two"] * 3
    assert handed.stop_reason == "early_stopping" and handed.epochs_completed == 6
    # a final stage planned for the very epoch the main stage's patience runs out gets its
    # own patience (not the main stage's stale best)
    stage_two["start_epoch"] = 3
    planned = train(
        make_config(tmp_path / "planned", emt_train_file, **frozen, stage_two=stage_two)
    )
    rows = read_metrics_csv(planned.metrics_csv)
    assert [row["stage"] for row in rows] == ["main"] * 3 + ["stage_two"] * 3


def test_patience_must_be_positive(tmp_path, emt_train_file):
    with pytest.raises(ConfigError, match="training.early_stopping_patience: >= 1 or null"):
        make_config(tmp_path, emt_train_file, early_stopping_patience=0)

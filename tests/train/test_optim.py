"""Optimizer construction and the per-epoch schedule (plateau, final stage)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from equiforce.train.config import SchedulerConfig, StageTwoConfig, TrainConfig
from equiforce.train.optim import MAIN_STAGE, STAGE_TWO, TrainingSchedule, build_optimizer


def _schedule(**settings) -> TrainingSchedule:
    config = TrainConfig(**settings)
    model = nn.Linear(2, 1)
    return TrainingSchedule(config, build_optimizer(model, config))


def test_optimizer_choice_and_amsgrad():
    model = nn.Linear(2, 1)
    adamw = build_optimizer(model, TrainConfig(optimizer="adamw", lr=0.1, weight_decay=0.01))
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["amsgrad"] and adamw.param_groups[0]["weight_decay"] == 0.01
    adam = build_optimizer(model, TrainConfig(amsgrad=False))
    assert type(adam) is torch.optim.Adam and not adam.param_groups[0]["amsgrad"]


def test_plateau_reduces_lr_after_patience_without_improvement():
    schedule = _schedule(lr=1.0, scheduler=SchedulerConfig(factor=0.5, patience=1))
    for epoch, loss in enumerate([1.0, 2.0, 2.0, 2.0, 2.0]):  # reduce after 2 bad epochs
        schedule.begin_epoch(epoch)
        schedule.end_epoch(epoch, loss)
    assert schedule.lr == pytest.approx(0.25)


def test_final_stage_switches_loss_weights_and_lr():
    stage_two = StageTwoConfig(enabled=True, start_fraction=0.5, lr=1e-3, energy_weight=50.0)
    schedule = _schedule(max_epochs=4, lr=0.01, energy_weight=1.0, stage_two=stage_two)
    assert [schedule.stage(e) for e in range(4)] == [MAIN_STAGE] * 2 + [STAGE_TWO] * 2
    assert [schedule.begin_epoch(e) for e in range(4)] == [False, False, True, False]
    assert schedule.lr == pytest.approx(1e-3)
    assert schedule.loss(0).weights["energy"] == 1.0
    assert schedule.loss(3).weights["energy"] == 50.0
    schedule.end_epoch(3, 1e9)  # the plateau scheduler no longer acts
    assert schedule.lr == pytest.approx(1e-3)


def test_schedule_state_round_trip():
    schedule = _schedule(scheduler=SchedulerConfig(factor=0.5, patience=0))
    schedule.end_epoch(0, 1.0)
    schedule.end_epoch(1, 2.0)
    other = _schedule(scheduler=SchedulerConfig(factor=0.5, patience=0))
    other.load_state_dict(schedule.state_dict())
    assert other.plateau.best == schedule.plateau.best
    assert other.plateau.num_bad_epochs == schedule.plateau.num_bad_epochs


def test_final_stage_can_start_after_a_share_of_the_time_budget_and_is_checkpointed():
    stage_two = StageTwoConfig(enabled=True, start_time_fraction=0.5, energy_weight=50.0)
    schedule = _schedule(max_epochs=100, time_budget_s=10.0, stage_two=stage_two)
    schedule.start_stage_two_if_due(epoch=0, elapsed_s=0.0)
    schedule.start_stage_two_if_due(epoch=3, elapsed_s=4.9)
    assert schedule.stage(3) == MAIN_STAGE
    schedule.start_stage_two_if_due(epoch=4, elapsed_s=5.1)
    schedule.start_stage_two_if_due(epoch=5, elapsed_s=9.0)  # already fixed at epoch 4
    assert [schedule.stage(e) for e in (3, 4, 5)] == [MAIN_STAGE, STAGE_TWO, STAGE_TWO]
    resumed = _schedule(max_epochs=100, time_budget_s=10.0, stage_two=stage_two)
    resumed.load_state_dict(schedule.state_dict())
    resumed.start_stage_two_if_due(epoch=6, elapsed_s=9.0)
    assert resumed.stage(4) == STAGE_TWO


def test_time_fraction_start_needs_a_time_budget():
    with pytest.raises(ValueError, match="start_time_fraction"):
        TrainConfig(stage_two=StageTwoConfig(enabled=True, start_time_fraction=0.5))


def test_adam_is_fused_and_a_checkpoint_of_the_loop_adam_resumes_with_the_loop():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    config = TrainConfig(lr=0.01, weight_decay=1e-3)
    fused = build_optimizer(model, config)
    assert fused.param_groups[0]["fused"] is True
    older = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-3, amsgrad=True)
    twin = nn.Linear(3, 2)
    for _ in range(2):
        model(torch.ones(4, 3)).square().sum().backward()
        older.step()
        older.zero_grad()
    resumed = build_optimizer(twin, config)
    checkpoint = copy.deepcopy(older.state_dict())  # a checkpoint written before fused Adam
    resumed.load_state_dict(checkpoint)
    assert not resumed.param_groups[0]["fused"]
    twin.load_state_dict(model.state_dict())
    for module, optimizer in ((model, older), (twin, resumed)):
        module(torch.ones(4, 3)).square().sum().backward()
        optimizer.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)  # the resumed step is the loop's, bit for bit

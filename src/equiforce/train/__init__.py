"""Training: typed run config, losses, EMA, schedule, checkpoints, the trainer, evaluation.

Entry points: ``train(config, resume)`` runs a configured training; ``prepare_data`` and
``build_model_from_config`` give the data and the freshly initialised model that ``train``
would use (the quickstart and benchmarks reuse them).
"""

from equiforce.train.config import (
    DataConfig,
    EMAConfig,
    ModelConfig,
    RunConfig,
    SchedulerConfig,
    StageTwoConfig,
    TrainConfig,
    dump_config,
    load_config,
)
from equiforce.train.ema import ExponentialMovingAverage
from equiforce.train.losses import (
    EnergyPerAtomLoss,
    ForcesLoss,
    StressLoss,
    WeightedLoss,
    energy_forces_stress_loss,
)
from equiforce.train.run import TrainResult, train
from equiforce.train.setup import TrainingData, build_model_from_config, prepare_data
from equiforce.train.trainer import NonFiniteLossError, Trainer
from equiforce.typed_config import ConfigError

__all__ = [
    "ConfigError",
    "DataConfig",
    "EMAConfig",
    "EnergyPerAtomLoss",
    "ExponentialMovingAverage",
    "ForcesLoss",
    "ModelConfig",
    "NonFiniteLossError",
    "RunConfig",
    "SchedulerConfig",
    "StageTwoConfig",
    "StressLoss",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingData",
    "WeightedLoss",
    "build_model_from_config",
    "dump_config",
    "energy_forces_stress_loss",
    "load_config",
    "prepare_data",
    "train",
]

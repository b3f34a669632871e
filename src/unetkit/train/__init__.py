"""Training and evaluation: config, losses, metrics, checkpoints, the trainer."""

from unetkit.train.checkpoint import load, save_model
from unetkit.train.config import TrainConfig
from unetkit.train.trainer import Run, train

__all__ = ["Run", "TrainConfig", "load", "save_model", "train"]

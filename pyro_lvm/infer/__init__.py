"""Inference tools that work on any model/guide pair: KL control (scaling handler, schedules,
annealing callback), free bits, aggressive encoder training; discrete-latent estimators by
name and the harness that compares them."""

from .aggressive import AggressiveTraining, split_parameters
from .annealing import KLAnnealing
from .discrete import DiscreteELBO, TemperatureAnnealing
from .estimators import compare_estimators
from .handlers import KLScaledELBO, KLScaleMessenger, kl_scale
from .objectives import FreeBitsELBO
from .schedules import Constant, Cyclical, Linear, Schedule, Sigmoid, make_schedule

__all__ = [
    "AggressiveTraining", "split_parameters",
    "KLAnnealing",
    "DiscreteELBO", "TemperatureAnnealing", "compare_estimators",
    "KLScaledELBO", "KLScaleMessenger", "kl_scale",
    "FreeBitsELBO",
    "Constant", "Cyclical", "Linear", "Schedule", "Sigmoid", "make_schedule",
]

"""Inference tools that work on any model/guide pair: KL control (scaling handler, schedules,
annealing callback), free bits, aggressive encoder training; discrete-latent estimators by
name (one registry, ``discrete.ESTIMATORS``), the harness that compares them, and a callback
logging the gradient's variance during training."""

from .aggressive import AggressiveTraining, split_parameters
from .annealing import KLAnnealing
from .discrete.estimators import ESTIMATORS, DiscreteELBO, TemperatureAnnealing, applicable_estimators, estimator_applicability
from .discrete.comparison import compare_estimators
from .discrete.gradient_variance import GradientVariance
from .handlers import KLScaledELBO, KLScaleMessenger, kl_scale
from .objectives import FreeBitsELBO
from .schedules import Constant, Cyclical, Linear, Schedule, Sigmoid, make_schedule

__all__ = [
    "AggressiveTraining", "split_parameters",
    "KLAnnealing",
    "ESTIMATORS", "DiscreteELBO", "TemperatureAnnealing", "applicable_estimators", "estimator_applicability",
    "compare_estimators", "GradientVariance",
    "KLScaledELBO", "KLScaleMessenger", "kl_scale",
    "FreeBitsELBO",
    "Constant", "Cyclical", "Linear", "Schedule", "Sigmoid", "make_schedule",
]

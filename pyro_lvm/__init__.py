"""pyro_lvm: latent-variable models as Pyro model/guide pairs.

Everything here works on *any* object with ``model(batch)`` and ``guide(batch)`` methods
(see :mod:`pyro_lvm.base`): training (:func:`fit`, :mod:`pyro_lvm.training`), evaluation
(:mod:`pyro_lvm.evaluation`), KL control and discrete estimators (:mod:`pyro_lvm.infer`) and
inspection (:mod:`pyro_lvm.inspection`); docs/architecture.md draws the layers.
"""

from .base import ModelGuidePair, check_pair
from .checkpoint import load_checkpoint, set_seed
from .evaluation.metrics import elbo_terms, log_likelihood
from .evaluation.report import evaluation_report
from .training.batching import BatchList
from .training.callbacks import Callback, History, TrainingDivergedError, TrainState
from .training.loop import fit

__version__ = "0.1.0"

__all__ = [
    "BatchList", "Callback", "History", "ModelGuidePair", "TrainState", "TrainingDivergedError",
    "check_pair", "elbo_terms", "evaluation_report", "fit", "load_checkpoint",
    "log_likelihood", "set_seed",
]

"""Learned performance predictors: surrogates trained online on finished trials.

:class:`Predictor` maps an encoding to a predicted score (higher is better) and is refit as
results come in; ``bo`` uses it as its surrogate, and the sweeper uses one
(``hydra/sweeper/predictor=gp|mlp``) to rank pre-screen pools and to report its held-out rank
correlation (:class:`HeldOutCorrelation`). No torch, Hydra or MLflow here.
"""

from nas_plugin.predictors.evaluation import HeldOutCorrelation
from nas_plugin.predictors.features import OneHotFeatures
from nas_plugin.predictors.predictor import MODELS, SCORE_WARPS, Predictor, PredictorError

__all__ = [
    "MODELS",
    "SCORE_WARPS",
    "HeldOutCorrelation",
    "OneHotFeatures",
    "Predictor",
    "PredictorError",
]

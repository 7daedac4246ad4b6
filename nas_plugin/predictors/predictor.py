"""An online performance predictor: a surrogate (encoding -> score) refit as results come in.

Pure numpy/scipy/scikit-learn on encodings: no torch, Hydra or MLflow. ``bo`` uses it as its
surrogate; the sweeper uses one (``hydra/sweeper/predictor=gp|mlp``) to rank a pre-screen pool
and reports its held-out rank correlation (:class:`HeldOutCorrelation`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nas_plugin.predictors.features import FEATURES, make_features
from nas_plugin.predictors.surrogates import (
    GaussianProcess,
    MLPEnsemble,
    Surrogate,
    normal_scores,
    single_threaded_blas,
)
from nas_plugin.space import Encoding, SearchSpace

MODELS = ("gp", "mlp")
SCORE_WARPS = ("rank", "none")


class PredictorError(ValueError):
    """An invalid predictor config: the message names the key, the value and what is allowed."""


class Predictor:
    """Learns scores (higher is better) of encodings of ``space`` from finished trials.

    ``model``: ``gp`` (a Gaussian process on one-hot features, kernel hyperparameters re-picked
    by marginal likelihood once the data has grown by ``retune_growth``) or ``mlp`` (an
    ensemble of ``ensemble_size`` MLPs of ``hidden_size`` units), on ``features``: ``onehot``
    (one-hot decisions), ``path`` (BANANAS' path encoding of a cell space such as nb201) or
    ``path+onehot`` (both). ``score_warp=rank`` fits normal
    scores of the ranks, so predictions rank candidates but are not on the metric's scale.
    Failed results (``None``) are kept out of the fit. The model is refit lazily, once
    ``refit_every`` new results have come in.
    """

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        model: str = "gp",
        score_warp: str = "rank",
        min_trials: int = 5,
        refit_every: int = 1,
        retune_growth: float = 0.1,
        ensemble_size: int = 5,
        hidden_size: int = 32,
        features: str = "onehot",
        rng: random.Random | None = None,
        where: str = "hydra.sweeper.predictor",
    ) -> None:
        self.model = _one_of(where, "model", model, MODELS)
        self.score_warp = _one_of(where, "score_warp", score_warp, SCORE_WARPS)
        self.min_trials = max(2, _int(where, "min_trials", min_trials, 1))
        self.refit_every = _int(where, "refit_every", refit_every, 1)
        self.retune_growth = _number(where, "retune_growth", retune_growth)
        self.ensemble_size = _int(where, "ensemble_size", ensemble_size, 1)
        self.hidden_size = _int(where, "hidden_size", hidden_size, 1)
        self.feature_kind = _one_of(where, "features", features, FEATURES)
        try:
            self.features = make_features(space, self.feature_kind)
        except ValueError as err:
            raise PredictorError(f"{where}.features={features!r}: {err}") from None
        # Insertion-ordered; a repeated result replaces the earlier one in place.
        self.scores: dict[Encoding, float | None] = {}
        # Draws the MLPs' initial weights; bo passes its own generator (one random stream).
        self.rng = rng if rng is not None else random.Random(seed)
        self._surrogate: Surrogate | None = None
        self._fitted_on = 0  # how many scored results the current model has seen
        self._tuned_on = 0  # how many scored results the GP's hyperparameters were picked on

    @classmethod
    def from_config(
        cls,
        options: Mapping[str, Any] | None,
        space: SearchSpace,
        seed: int,
        extra: Sequence[str] = (),
    ) -> Predictor | None:
        """The predictor ``hydra.sweeper.predictor`` describes, or None for ``name: none``.

        ``extra`` names options a caller reads itself (left out of the predictor's)."""
        options = dict(options or {"name": "none"})
        name = options.pop("name", "none")
        if name in (None, "none"):
            return None
        if name not in MODELS:
            raise PredictorError(
                f"hydra.sweeper.predictor.name={name!r} is unknown; allowed: {['none', *MODELS]}"
            )
        allowed = ["score_warp", "min_trials", "refit_every", "retune_growth"]
        allowed += ["ensemble_size", "hidden_size", "features", *extra]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise PredictorError(
                f"hydra.sweeper.predictor: unknown option(s) {unknown}; allowed: {allowed}"
            )
        for key in extra:
            options.pop(key, None)
        return cls(space, seed=seed, model=name, **options)

    def add(self, encoding: Encoding, score: float | None) -> None:
        """One finished result; ``None`` (failed) is remembered but never fitted."""
        self.scores[encoding] = score

    @property
    def observed(self) -> list[tuple[Encoding, float]]:
        return [(e, s) for e, s in self.scores.items() if s is not None]

    @property
    def ready(self) -> bool:
        """Whether there are ``min_trials`` (at least 2) scored results to fit."""
        return len(self.observed) >= self.min_trials

    def fit(self) -> Surrogate:
        """The surrogate for the current results (refit only when ``refit_every`` are new)."""
        scored = self.observed
        if len(scored) < 2:
            raise PredictorError("the predictor needs at least 2 scored results to fit")
        if self._surrogate is None or len(scored) - self._fitted_on >= self.refit_every:
            x = self.features.transform([e for e, _ in scored])
            y = np.array([s for _, s in scored], dtype=float)
            if self.score_warp == "rank":
                y = normal_scores(y)
            if self.model == "gp":
                # Re-pick the kernel's hyperparameters only once the data has grown enough:
                # often while it is small and they move, rarely later.
                previous = self._surrogate if isinstance(self._surrogate, GaussianProcess) else None
                keep = previous is not None and len(scored) < self._tuned_on * (
                    1 + self.retune_growth
                )
                self._surrogate = GaussianProcess(x, y, previous.hyper if keep else None)
                if not keep:
                    self._tuned_on = len(scored)
            else:
                random_state = self.rng.randrange(2**31)
                self._surrogate = MLPEnsemble(
                    x, y, random_state, self.ensemble_size, self.hidden_size
                )
            self._fitted_on = len(scored)
        return self._surrogate

    def invalidate(self) -> None:
        """Refit from scratch at the next ``fit`` (the scores were rewritten, not added to)."""
        self._surrogate = None
        self._fitted_on = self._tuned_on = 0

    def predict(self, encodings: Sequence[Encoding]) -> tuple[np.ndarray, np.ndarray]:
        """Predicted mean and standard deviation per encoding (higher mean = better).

        With ``score_warp=rank`` both are on the normal-score scale of the results' ranks.
        """
        with single_threaded_blas():
            surrogate = self.fit()
            return surrogate.predict(self.features.transform(list(encodings)))


def _one_of(where: str, key: str, value: object, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise PredictorError(f"{where}.{key}={value!r} is unknown; allowed: {list(allowed)}")
    return str(value)


def _int(where: str, key: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PredictorError(f"{where}.{key}={value!r} must be an integer >= {minimum}")
    return value


def _number(where: str, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise PredictorError(f"{where}.{key}={value!r} must be a number >= 0")
    return float(value)

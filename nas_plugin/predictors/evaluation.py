"""How well a predictor ranks results it has not seen yet.

Each new result is predicted *before* the predictor learns it, so every (prediction, result)
pair is out of sample by construction; the rank correlation over these pairs is the number a
user can trust when deciding whether the predictor may rank candidates.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

from scipy.stats import kendalltau, spearmanr

from nas_plugin.predictors.predictor import Predictor, PredictorError
from nas_plugin.space import Encoding, SearchSpace

MIN_PAIRS = 3


class HeldOutCorrelation:
    """Wraps a :class:`Predictor`: ``observe`` predicts a result, then teaches it.

    ``window``: correlations over the last ``window`` pairs only (None: all pairs), which
    follows how the predictor does now rather than how it did on its first few results.
    """

    def __init__(self, predictor: Predictor, window: int | None = None) -> None:
        if window is not None and (
            isinstance(window, bool) or not isinstance(window, int) or window < MIN_PAIRS
        ):
            raise PredictorError(
                f"hydra.sweeper.predictor.window={window!r} must be null or an integer >= "
                f"{MIN_PAIRS}"
            )
        self.predictor = predictor
        self.window = window
        self.pairs: list[tuple[float, float]] = []  # (prediction, result)

    @classmethod
    def from_config(
        cls, options: Mapping[str, Any] | None, space: SearchSpace, seed: int
    ) -> HeldOutCorrelation | None:
        """The sweep's predictor (``hydra.sweeper.predictor``), or None for ``name: none``."""
        predictor = Predictor.from_config(options, space, seed, extra=("window",))
        if predictor is None:
            return None
        return cls(predictor, (options or {}).get("window"))

    def observe(self, encoding: Encoding, score: float | None) -> float | None:
        """Predict ``encoding`` from earlier results (if there are enough), then add it.

        Returns the prediction, or None when the predictor was not ready or the trial failed.
        """
        prediction = None
        if score is not None and self.predictor.ready and encoding not in self.predictor.scores:
            mean, _ = self.predictor.predict([encoding])
            prediction = float(mean[0])
            self.pairs.append((prediction, float(score)))
        self.predictor.add(encoding, score)
        return prediction

    def correlation(self) -> dict[str, float] | None:
        """``{"spearman": rho, "kendall": tau}`` over the held-out pairs, or None while there
        are fewer than 3 or either side is constant."""
        pairs = self.pairs[-self.window :] if self.window else self.pairs
        if len(pairs) < MIN_PAIRS:
            return None
        predicted, actual = zip(*pairs, strict=True)
        if len(set(predicted)) < 2 or len(set(actual)) < 2:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rho = float(spearmanr(predicted, actual).statistic)
            tau = float(kendalltau(predicted, actual).statistic)
        if math.isnan(rho) or math.isnan(tau):
            return None
        return {"spearman": rho, "kendall": tau}

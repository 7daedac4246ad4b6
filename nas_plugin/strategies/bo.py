"""Bayesian optimization in the style of BANANAS (White et al., 2021).

Each ask:

1. The first ``initial_samples`` candidates are random.
2. Candidates: every one-decision neighbour of the ``parents`` best candidates so far, plus
   ``mutations`` random mutations of 1 to 3 decisions of each of them (they also reach float
   values off the neighbourhood grid), plus ``random_candidates`` random ones, minus everything
   already proposed.
3. A surrogate predicts a mean and an uncertainty for each candidate from a one-hot encoding of
   its decisions (:class:`OneHotFeatures`, derived from any ``SearchSpace``); the candidate with
   the best acquisition value is proposed.

Surrogates: ``gp``, a Gaussian process with an RBF kernel on the one-hot features (on one-hots
the squared distance is twice the number of differing decisions), or ``mlp``, BANANAS' ensemble
of small scikit-learn MLPs whose spread is the uncertainty. Acquisitions: ``ei`` (expected
improvement), ``its`` (independent Thompson sampling: one draw per candidate from its predictive
normal) and ``ucb`` (mean + beta * std). Scores are first replaced by normal scores of their
ranks (``score_warp: rank``): a few broken architectures (10 % accuracy on NAS-Bench-201) would
otherwise dominate a model that has to rank the top ones apart by tenths of a percent.

On NAS-Bench-201 (``nas-plugin bench nb201``) the GP with expected improvement found better
architectures than the MLP ensemble at a hundredth of its cost per ask, hence the defaults.

``ask`` stays cheap: the surrogate is refit once ``refit_every`` new answers have come in (a GP
refit is one Cholesky factorization); the GP re-picks its kernel's hyperparameters only when the
data has grown by ``retune_growth`` since it last did. Between refits the last model is reused;
already proposed candidates drop out of the pool, which is also how a batch (several asks before
the tells) gets distinct candidates. Failed candidates (``None``) are never proposed again and
are left out of the surrogate's data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import norm

from nas_plugin.predictors import Predictor, PredictorError
from nas_plugin.predictors.surrogates import single_threaded_blas
from nas_plugin.space import Encoding, SearchSpace
from nas_plugin.strategies.base import Strategy, StrategyError, positive_int, sample_unproposed

SURROGATES = ("gp", "mlp")
ACQUISITIONS = ("its", "ucb", "ei")
SCORE_WARPS = ("rank", "none")


class BayesianOptimization(Strategy):
    name = "bo"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        initial_samples: int = 10,
        surrogate: str = "gp",
        acquisition: str = "ei",
        beta: float = 2.0,
        score_warp: str = "rank",
        parents: int = 5,
        mutations: int = 10,
        random_candidates: int = 20,
        refit_every: int = 1,
        retune_growth: float = 0.1,
        ensemble_size: int = 5,
        hidden_size: int = 32,
        features: str = "onehot",
        float_points: int = 5,
        max_resamples: int = 1000,
    ) -> None:
        super().__init__(space, seed)
        self.initial_samples = positive_int(self.name, "initial_samples", initial_samples)
        self.surrogate = _one_of("surrogate", surrogate, SURROGATES)
        self.acquisition = _one_of("acquisition", acquisition, ACQUISITIONS)
        self.beta = _non_negative_number("beta", beta)
        self.score_warp = _one_of("score_warp", score_warp, SCORE_WARPS)
        self.parents = positive_int(self.name, "parents", parents)
        self.mutations = _non_negative_int("mutations", mutations)
        self.random_candidates = _non_negative_int("random_candidates", random_candidates)
        self.refit_every = positive_int(self.name, "refit_every", refit_every)
        self.retune_growth = _non_negative_number("retune_growth", retune_growth)
        self.ensemble_size = positive_int(self.name, "ensemble_size", ensemble_size)
        self.hidden_size = positive_int(self.name, "hidden_size", hidden_size)
        self.float_points = positive_int(self.name, "float_points", float_points)
        self.max_resamples = positive_int(self.name, "max_resamples", max_resamples)
        # The surrogate and its data (nas_plugin.predictors, shared with the sweeper's
        # predictor); it draws the MLPs' seeds from this strategy's generator.
        try:
            self.predictor = self._make_predictor(space, seed, features)
        except PredictorError as err:
            message = str(err).replace("hydra.sweeper.strategy.", "")
            raise StrategyError(f"strategy 'bo': {message}") from None
        self.features = self.predictor.features
        self.scores = self.predictor.scores
        self._proposed: set[Encoding] = set()
        self._np_rng = np.random.default_rng(seed)

    def _make_predictor(self, space: SearchSpace, seed: int, features: str) -> Predictor:
        return Predictor(
            space,
            seed,
            model=self.surrogate,
            score_warp=self.score_warp,
            min_trials=2,
            refit_every=self.refit_every,
            retune_growth=self.retune_growth,
            ensemble_size=self.ensemble_size,
            hidden_size=self.hidden_size,
            features=features,
            rng=self.rng,
            where="hydra.sweeper.strategy",  # bo checked its other options already
        )

    # -- ask ------------------------------------------------------------------------------------

    def ask(self) -> Encoding | None:
        scored = [(e, s) for e, s in self.scores.items() if s is not None]
        candidate = None
        if len(self._proposed) >= self.initial_samples and len(scored) >= 2:
            candidate = self._best_by_acquisition(scored)
        if candidate is None:
            candidate = self._random_new()
        if candidate is not None:
            self._proposed.add(candidate)
        return candidate

    def _random_new(self) -> Encoding | None:
        return sample_unproposed(self.space, self.rng, self._proposed, self.max_resamples)

    def _candidates(self, scored: list[tuple[Encoding, float]]) -> list[Encoding]:
        parents = [e for e, _ in sorted(scored, key=lambda pair: -pair[1])[: self.parents]]
        pool: dict[Encoding, None] = {}  # ordered and duplicate-free, for determinism
        for parent in parents:
            for neighbour in self.space.neighbours(parent, self.float_points):
                pool[neighbour] = None
            for _ in range(self.mutations):
                child = parent
                for _ in range(self.rng.randint(1, 3)):
                    child = self.space.mutate(child, self.rng)
                pool[child] = None
        for _ in range(self.random_candidates):
            pool[self.space.sample(self.rng)] = None
        return [c for c in pool if c not in self._proposed]

    def _best_by_acquisition(self, scored: list[tuple[Encoding, float]]) -> Encoding | None:
        pool = self._candidates(scored)
        if not pool:
            return None
        with single_threaded_blas():
            model = self.predictor.fit()
            mean, std = model.predict(self.features.transform(pool))
        if self.acquisition == "its":
            values = self._np_rng.normal(mean, std)
        elif self.acquisition == "ucb":
            values = mean + self.beta * std
        else:
            values = _expected_improvement(mean, std, model.best)
        return pool[int(np.argmax(values))]

    # -- tell -----------------------------------------------------------------------------------

    def tell(self, encoding: Encoding, score: float | None) -> None:
        super().tell(encoding, score)
        self._proposed.add(encoding)
        self.scores[encoding] = score  # a repeated tell replaces, so no answer counts twice


def _expected_improvement(mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    z = (mean - best) / std
    return (mean - best) * norm.cdf(z) + std * norm.pdf(z)


def _one_of(key: str, value: object, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise StrategyError(f"strategy 'bo': {key}={value!r} is unknown; allowed: {list(allowed)}")
    return str(value)


def _non_negative_int(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StrategyError(f"strategy 'bo': {key}={value!r} must be an integer >= 0")
    return value


def _non_negative_number(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise StrategyError(f"strategy 'bo': {key}={value!r} must be a number >= 0")
    return float(value)

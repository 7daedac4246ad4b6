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

import functools
import math
import warnings
from collections.abc import Sequence
from contextlib import AbstractContextManager

import numpy as np
from scipy.linalg import cho_factor, cho_solve, solve_triangular
from scipy.stats import norm, rankdata
from threadpoolctl import ThreadpoolController

from nas_plugin.space import Categorical, Encoding, FloatRange, IntRange, SearchSpace
from nas_plugin.strategies.base import Strategy, StrategyError, positive_int

SURROGATES = ("gp", "mlp")
ACQUISITIONS = ("its", "ucb", "ei")
SCORE_WARPS = ("rank", "none")


class OneHotFeatures:
    """A fixed-length numeric vector for every encoding of a space.

    Categorical decisions become one column per choice (all zero while inactive); integer and
    float decisions become one column scaled to [0, 1] (on a log scale for log intervals), and,
    when they are conditional, a second column that is 1 while they are active.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.columns: dict[str, int] = {}  # parameter -> its first column
        self._choice_index: dict[str, dict[object, int]] = {}
        width = 0
        for param in space.params:
            self.columns[param.name] = width
            if isinstance(param, Categorical):
                self._choice_index[param.name] = {v: i for i, v in enumerate(param.choices)}
                width += len(param.choices)
            else:
                width += 1 if param.condition is None else 2
        self.width = width
        self._params = {param.name: param for param in space.params}

    def transform(self, encodings: Sequence[Encoding]) -> np.ndarray:
        features = np.zeros((len(encodings), self.width))
        for row, encoding in enumerate(encodings):
            for key, value in encoding:
                column = self.columns[key]
                param = self._params[key]
                if isinstance(param, Categorical):
                    features[row, column + self._choice_index[key][value]] = 1.0
                    continue
                features[row, column] = _scaled(param, value)
                if param.condition is not None:
                    features[row, column + 1] = 1.0
        return features


def _scaled(param: IntRange | FloatRange, value: float) -> float:
    low, high = float(param.low), float(param.high)
    if isinstance(param, FloatRange) and param.log:
        low, high, value = math.log(low), math.log(high), math.log(value)
    return 0.5 if high == low else (value - low) / (high - low)


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
        self.features = OneHotFeatures(space)
        self.scores: dict[Encoding, float | None] = {}
        self._proposed: set[Encoding] = set()
        self._np_rng = np.random.default_rng(seed)
        self._model: _Surrogate | None = None
        self._fitted_on = 0  # how many scored answers the current model has seen
        self._tuned_on = 0  # how many scored answers the GP's hyperparameters were picked on

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
        for _ in range(self.max_resamples):
            candidate = self.space.sample(self.rng)
            if candidate not in self._proposed:
                return candidate
        return None

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
        with _single_threaded_blas():
            model = self._surrogate(scored)
            mean, std = model.predict(self.features.transform(pool))
        if self.acquisition == "its":
            values = self._np_rng.normal(mean, std)
        elif self.acquisition == "ucb":
            values = mean + self.beta * std
        else:
            values = _expected_improvement(mean, std, model.best)
        return pool[int(np.argmax(values))]

    def _surrogate(self, scored: list[tuple[Encoding, float]]) -> _Surrogate:
        if self._model is None or len(scored) - self._fitted_on >= self.refit_every:
            x = self.features.transform([e for e, _ in scored])
            y = np.array([s for _, s in scored])
            if self.score_warp == "rank":
                y = _normal_scores(y)
            if self.surrogate == "gp":
                # Re-pick the kernel's hyperparameters only once the data has grown enough:
                # often while it is small and they move, rarely later.
                previous = self._model if isinstance(self._model, _GaussianProcess) else None
                keep = previous is not None and len(scored) < self._tuned_on * (
                    1 + self.retune_growth
                )
                self._model = _GaussianProcess(x, y, previous.hyper if keep else None)
                if not keep:
                    self._tuned_on = len(scored)
            else:
                random_state = self.rng.randrange(2**31)
                self._model = _MLPEnsemble(x, y, random_state, self.ensemble_size, self.hidden_size)
            self._fitted_on = len(scored)
        return self._model

    # -- tell -----------------------------------------------------------------------------------

    def tell(self, encoding: Encoding, score: float | None) -> None:
        super().tell(encoding, score)
        self._proposed.add(encoding)
        self.scores[encoding] = score  # a repeated tell replaces, so no answer counts twice


class _Surrogate:
    best: float  # the best observed score, for expected improvement

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class _GaussianProcess(_Surrogate):
    """A zero-mean GP on standardized scores with kernel ``signal * exp(-d^2 / (2 l^2))``.

    Small and in numpy on purpose: the length scale ``l`` and the noise ratio are picked from a
    grid by marginal likelihood, with the signal variance in closed form, which costs a few
    Cholesky factorizations instead of a gradient-based optimizer run.
    """

    LENGTH_SCALES = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
    NOISE_RATIOS = (1e-3, 1e-2, 0.05, 0.2)

    def __init__(self, x: np.ndarray, y: np.ndarray, hyper: tuple[float, float] | None) -> None:
        self.best = float(y.max())
        self.offset, self.scale = float(y.mean()), float(y.std()) or 1.0
        target = (y - self.offset) / self.scale
        self.x = x
        distances = _squared_distances(x, x)
        if hyper is None:
            hyper = max(
                ((ls, noise) for ls in self.LENGTH_SCALES for noise in self.NOISE_RATIOS),
                key=lambda h: self._fit(distances, target, *h),
            )
        self.hyper = hyper
        self._fit(distances, target, *hyper)

    def _fit(self, distances: np.ndarray, target: np.ndarray, ls: float, noise: float) -> float:
        """Factorize for these hyperparameters; return the log marginal likelihood (+ const)."""
        gram = np.exp(-distances / (2 * ls**2)) + noise * np.eye(len(target))
        self.cholesky = cho_factor(gram, lower=True)
        self.alpha = cho_solve(self.cholesky, target)
        self.length_scale = ls
        n = len(target)
        self.signal = max(float(target @ self.alpha) / n, 1e-12)
        log_det = 2 * np.log(np.diag(self.cholesky[0])).sum()
        return -0.5 * n * math.log(self.signal) - 0.5 * log_det

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cross = np.exp(-_squared_distances(x, self.x) / (2 * self.length_scale**2))
        mean = cross @ self.alpha
        v = solve_triangular(self.cholesky[0], cross.T, lower=True)
        variance = self.signal * np.maximum(1.0 - (v * v).sum(axis=0), 1e-12)
        return mean * self.scale + self.offset, np.sqrt(variance) * self.scale


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2 * a @ b.T
    return np.maximum(squared, 0.0)


class _MLPEnsemble(_Surrogate):
    def __init__(
        self, x: np.ndarray, y: np.ndarray, random_state: int, size: int, hidden: int
    ) -> None:
        from sklearn.neural_network import MLPRegressor

        self.best = float(y.max())
        # Standardized targets: accuracies differ by fractions of a percent near the top.
        self.offset, self.scale = float(y.mean()), float(y.std()) or 1.0
        target = (y - self.offset) / self.scale
        self.members = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # max_iter reached is expected on small data
            for member in range(size):
                net = MLPRegressor(
                    hidden_layer_sizes=(hidden, hidden),
                    learning_rate_init=0.01,
                    max_iter=200,
                    random_state=random_state + member,
                )
                self.members.append(net.fit(x, target))

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        predictions = np.stack([net.predict(x) for net in self.members])
        mean = predictions.mean(axis=0) * self.scale + self.offset
        std = predictions.std(axis=0) * self.scale
        return mean, np.maximum(std, 1e-9)


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()  # inspecting the loaded libraries takes a few ms: do it once


def _single_threaded_blas() -> AbstractContextManager:
    """BLAS threads cost more than they save on matrices this small (~10x on 2 cores)."""
    return _blas_controller().limit(limits=1, user_api="blas")


def _normal_scores(y: np.ndarray) -> np.ndarray:
    ranks = rankdata(y)
    return norm.ppf((ranks - 0.5) / len(y))


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

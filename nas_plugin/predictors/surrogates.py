"""Regression models on feature vectors that predict a mean and an uncertainty.

``GaussianProcess`` (numpy/scipy) and ``MLPEnsemble`` (scikit-learn) are what ``bo`` and the
online :class:`~nas_plugin.predictors.Predictor` fit; both standardize their targets.
"""

from __future__ import annotations

import functools
import math
import warnings
from contextlib import AbstractContextManager

import numpy as np
from scipy.linalg import cho_factor, cho_solve, solve_triangular
from scipy.stats import norm, rankdata
from threadpoolctl import ThreadpoolController


class Surrogate:
    best: float  # the best observed target, for expected improvement

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the prediction for each row of ``x``."""
        raise NotImplementedError


class GaussianProcess(Surrogate):
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
        distances = squared_distances(x, x)
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
        cross = np.exp(-squared_distances(x, self.x) / (2 * self.length_scale**2))
        mean = cross @ self.alpha
        v = solve_triangular(self.cholesky[0], cross.T, lower=True)
        variance = self.signal * np.maximum(1.0 - (v * v).sum(axis=0), 1e-12)
        return mean * self.scale + self.offset, np.sqrt(variance) * self.scale


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2 * a @ b.T
    return np.maximum(squared, 0.0)


class MLPEnsemble(Surrogate):
    """BANANAS' ensemble of small MLPs; their spread is the uncertainty."""

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


def single_threaded_blas() -> AbstractContextManager:
    """BLAS threads cost more than they save on matrices this small (~10x on 2 cores)."""
    return _blas_controller().limit(limits=1, user_api="blas")


def normal_scores(y: np.ndarray) -> np.ndarray:
    """Normal scores of the ranks: outliers (broken architectures) stop dominating a fit."""
    ranks = rankdata(y)
    return norm.ppf((ranks - 0.5) / len(y))

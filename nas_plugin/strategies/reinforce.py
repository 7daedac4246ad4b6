"""REINFORCE with a controller policy (NASNet, Zoph et al. 2018; ENAS's controller, in numpy).

The policy holds one independent distribution per decision of the space (no RNN: a NAS space
has a few dozen decisions at most and a sweep too few trials to train one):

- a categorical or integer decision is a softmax over its values (one logit per value);
- a float interval is a Gaussian over its unit interval (in log space when ``log``), with a
  learned mean and log standard deviation; the sample is clipped into the interval;
- a conditional decision is sampled, and learned, only while it is active.

After each finished candidate the policy takes one policy-gradient step on ``advantage * grad log
p(candidate)``, plus ``entropy_weight`` times the entropy's gradient (keeps it from collapsing too
early). The advantage is the reward minus an exponential moving average of past rewards (the
baseline), divided by the running standard deviation of the rewards, so that one learning rate
works for accuracies in [0, 1], in percent, or negated losses alike.

Candidates are read back from their encodings, so a batch of asks before any tell is fine, and
so is telling candidates the strategy never asked for (a warm start). A failed candidate
updates nothing, unless ``failure_reward`` gives it a reward. Once the policy has sharpened it
keeps proposing candidates it already proposed; it then walks away from its sample one random
decision at a time (``space.mutate``) until the walk reaches a new candidate: local search around
the policy's mode, which the policy then learns from like from its own samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from nas_plugin.space import Encoding, FloatRange, Param, SearchSpace
from nas_plugin.strategies.base import Score, Strategy, StrategyError, positive_int

# Floats are searched on their unit interval; a narrower Gaussian could not explore it anymore.
_MIN_LOG_STD = math.log(0.02)


def _real(key: str, value: object, allowed: str, test: Callable[[float], bool]) -> float:
    """``value`` as a float if it is a finite number that passes ``test``; else a clear error."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not test(value)
    ):
        raise StrategyError(f"strategy 'reinforce': {key}={value!r} must be {allowed}")
    return float(value)


class Reinforce(Strategy):
    name = "reinforce"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        learning_rate: float = 0.5,
        baseline_decay: float = 0.9,
        entropy_weight: float = 0.01,
        initial_std: float = 0.3,
        failure_reward: float | None = None,
        max_resamples: int = 100,
    ) -> None:
        super().__init__(space, seed)
        self.learning_rate = _real(
            "learning_rate", learning_rate, "a number >= 0", lambda v: v >= 0
        )
        self.baseline_decay = _real(
            "baseline_decay", baseline_decay, "in [0, 1)", lambda v: 0 <= v < 1
        )
        self.entropy_weight = _real(
            "entropy_weight", entropy_weight, "a number >= 0", lambda v: v >= 0
        )
        self.initial_std = _real(
            "initial_std",
            initial_std,
            "in (0, 1] (a fraction of a float interval's width)",
            lambda v: 0 < v <= 1,
        )
        self.failure_reward = (
            None
            if failure_reward is None
            else _real("failure_reward", failure_reward, "a number or null", lambda v: True)
        )
        self.max_resamples = positive_int(self.name, "max_resamples", max_resamples)
        self.np_rng = np.random.default_rng(seed)
        # One logit vector per discrete decision; (mean, log std) on [0, 1] per float decision.
        self.logits: dict[str, np.ndarray] = {}
        self.gaussians: dict[str, np.ndarray] = {}
        for param in space.params:
            if isinstance(param, FloatRange):
                self.gaussians[param.name] = np.array([0.5, math.log(self.initial_std)])
            else:
                self.logits[param.name] = np.zeros(len(param.values()))
        self.baseline: float | None = None
        # Running mean and variance of the rewards (Welford), to scale the advantage.
        self._count = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._proposed: set[Encoding] = set()

    # -- asking -------------------------------------------------------------------------------

    def ask(self) -> Encoding | None:
        candidate = self._sample()
        for _ in range(self.max_resamples):
            if candidate not in self._proposed:
                self._proposed.add(candidate)
                return candidate
            # A fresh sample while the policy is still broad; once it has sharpened, a random walk
            # away from its mode, one decision per step, so the walk reaches beyond neighbours.
            fresh = self._sample()
            if fresh in self._proposed:
                fresh = self.space.mutate(candidate, self.rng)
            candidate = fresh
        return None

    def _sample(self) -> Encoding:
        decided: dict = {}
        for param in self.space.params:
            if not self.space.is_active(param, decided):
                continue
            if isinstance(param, FloatRange):
                mean, log_std = self.gaussians[param.name]
                unit = min(1.0, max(0.0, self.np_rng.normal(mean, math.exp(log_std))))
                decided[param.name] = _from_unit(param, unit)
            else:
                probs = _softmax(self.logits[param.name])
                decided[param.name] = param.values()[self.np_rng.choice(len(probs), p=probs)]
        return tuple(decided.items())

    # -- learning -----------------------------------------------------------------------------

    def tell(self, encoding: Encoding, score: Score | None) -> None:
        if isinstance(score, tuple):
            raise StrategyError(
                "strategy 'reinforce' is single-objective but was told a tuple of scores; "
                "combine the objectives into one reward first"
            )
        super().tell(encoding, score)
        self._proposed.add(encoding)
        reward = score if score is not None and math.isfinite(score) else self.failure_reward
        if reward is None:
            return
        reward = float(reward)
        if self.baseline is None:
            self.baseline = reward
        self._observe(reward)
        advantage = (reward - self.baseline) / self._scale()
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * reward
        self._step(dict(encoding), advantage)

    def _scale(self) -> float:
        # With one reward there is no spread yet (and the advantage is 0: it is the baseline).
        if self._count < 2:
            return 1.0
        std = math.sqrt(self._m2 / (self._count - 1))
        return std if std > 0 else 1.0

    def _observe(self, reward: float) -> None:
        self._count += 1
        delta = reward - self._mean
        self._mean += delta / self._count
        self._m2 += delta * (reward - self._mean)

    def _step(self, values: dict, advantage: float) -> None:
        """Ascend ``advantage * log p(values) + entropy_weight * entropy`` on active decisions."""
        for name, value in values.items():
            param: Param = self.space[name]
            if isinstance(param, FloatRange):
                self._step_gaussian(param, value, advantage)
                continue
            logits = self.logits[name]
            probs = _softmax(logits)
            grad = -advantage * probs
            grad[param.values().index(value)] += advantage
            log_probs = np.log(np.maximum(probs, 1e-12))
            entropy = -float(np.sum(probs * log_probs))
            grad += self.entropy_weight * -probs * (log_probs + entropy)
            logits += self.learning_rate * grad
            logits -= logits.max()  # softmax is shift-invariant; keeps the numbers small

    def _step_gaussian(self, param: FloatRange, value: float, advantage: float) -> None:
        mean, log_std = self.gaussians[param.name]
        var = math.exp(2 * log_std)
        z = _to_unit(param, value) - mean
        grad_mean = advantage * z / var
        # d/d log_std of log N(x; mean, std) is z^2/var - 1; a Gaussian's entropy grows by 1.
        grad_log_std = advantage * (z * z / var - 1) + self.entropy_weight
        # A raw step of mean's gradient explodes as std shrinks; scaling by var is the natural
        # gradient for the mean, so steps stay in units of the interval.
        mean = min(1.0, max(0.0, mean + self.learning_rate * var * grad_mean))
        log_std = min(0.0, max(_MIN_LOG_STD, log_std + self.learning_rate * grad_log_std))
        self.gaussians[param.name] = np.array([mean, log_std])

    def probabilities(self, name: str) -> dict[Any, float]:
        """The policy's current probability of each value of discrete decision ``name``."""
        param = self.space[name]
        if isinstance(param, FloatRange):
            raise StrategyError(f"'{name}' is a float interval: it has a Gaussian, not choices")
        return dict(zip(param.values(), _softmax(self.logits[name]).tolist(), strict=True))


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


def _to_unit(param: FloatRange, value: float) -> float:
    if param.high == param.low:
        return 0.5
    if param.log:
        low, high = math.log(param.low), math.log(param.high)
        return (math.log(value) - low) / (high - low)
    return (value - param.low) / (param.high - param.low)


def _from_unit(param: FloatRange, unit: float) -> float:
    if unit <= 0:
        return param.low  # the bounds exactly, not exp(log(bound)) with its rounding error
    if unit >= 1:
        return param.high
    if param.log:
        low, high = math.log(param.low), math.log(param.high)
        value = math.exp(low + unit * (high - low))
    else:
        value = param.low + unit * (param.high - param.low)
    return min(param.high, max(param.low, value))  # rounding must not leave the interval

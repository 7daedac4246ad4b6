"""HAT's latency predictor: a small MLP from a sub-transformer's encoding to its measured latency.

Features are the architecture encoding HAT uses, in numbers: layers, hidden size, heads and FFN
size (plus their products that the cost grows with: layers x hidden^2 and layers x hidden x FFN,
so a small data set suffices). Targets are latencies measured on this machine
(:func:`measure_latencies`: each sub-transformer extracted as a plain BERT and timed by
:func:`~nas_plugin.hardware.cost.measure_cost` on one text of ``seq_length`` tokens, batch 1).
The model is scikit-learn's ``MLPRegressor`` on standardised features and the standardised log
of the latency (latencies span more than an order of magnitude; errors are relative).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas_plugin.models.transformer import Architecture


def features(arch: Architecture) -> list[float]:
    layers, hidden = arch.num_layers, arch.hidden_size
    heads, ffn = arch.num_heads, arch.intermediate_size
    return [layers, hidden, heads, ffn, layers * hidden * hidden / 1e3, layers * hidden * ffn / 1e3]


def measure_latencies(
    supernet: Any,
    values: Sequence[Mapping[str, Any]],
    seq_length: int,
    repeats: int = 20,
    warmup: int = 3,
    rounds: int = 5,
) -> list[dict[str, float]]:
    """``measure_cost`` of each extracted sub-transformer (``params``, ``flops``,
    ``peak_memory_mb``) on the supernet's device, with ``latency_ms`` the FASTEST of ``repeats``
    timed forwards (as OFA's ``latency_stat: min``) and ``latency_median_ms``.

    The timed forwards are spread over ``rounds`` passes over all the sub-transformers: on a
    shared machine a burst of other work then slows a few rounds of every sub-transformer rather
    than all the repeats of some, which no predictor could learn."""
    from nas_plugin.hardware.cost import measure_cost
    from nas_plugin.supernets.ofa_targets import _timings_ms
    from nas_plugin.tasks.text import RandomTokenClassifier

    vocab = supernet.build_args[1]
    models = [RandomTokenClassifier(supernet.extract(v), vocab) for v in values]
    costs = [measure_cost(m, (seq_length,), latency_repeats=1, warmup=0) for m in models]
    timings: list[list[float]] = [[] for _ in models]
    rounds = max(1, min(rounds, repeats))
    for index in range(rounds):
        per_round = repeats // rounds + (index < repeats % rounds)
        for model, times in zip(models, timings, strict=True):
            times += _timings_ms(model, (seq_length,), per_round, warmup if index == 0 else 1)
    for cost, times in zip(costs, timings, strict=True):
        cost.update(latency_ms=min(times), latency_median_ms=float(np.median(times)))
    return costs


@dataclass
class LatencyPredictor:
    hidden_layers: tuple[int, ...] = (32, 32)
    seed: int = 0
    model: Any = None

    def fit(self, archs: Sequence[Architecture], latencies_ms: Sequence[float]) -> LatencyPredictor:
        from sklearn.compose import TransformedTargetRegressor
        from sklearn.neural_network import MLPRegressor
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer, StandardScaler

        if len(archs) < 2 or len(archs) != len(latencies_ms):
            raise ValueError(
                f"the latency predictor needs >= 2 measured sub-transformers, got {len(archs)}"
            )
        mlp = MLPRegressor(
            hidden_layer_sizes=self.hidden_layers,
            max_iter=3000,
            random_state=self.seed,
            learning_rate_init=0.01,
        )
        self.model = TransformedTargetRegressor(
            make_pipeline(StandardScaler(), mlp),
            transformer=make_pipeline(
                FunctionTransformer(np.log, np.exp, check_inverse=False), StandardScaler()
            ),
        )
        self.model.fit(np.array([features(a) for a in archs]), np.asarray(latencies_ms, float))
        return self

    def predict(self, archs: Sequence[Architecture]) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("fit the latency predictor first")
        return self.model.predict(np.array([features(a) for a in archs]))


def prediction_error(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """RMSE (ms), relative RMSE and the fraction of predictions within +-10 % of the measured."""
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    rmse = float(math.sqrt(np.mean((p - m) ** 2)))
    return {
        "rmse_ms": rmse,
        "relative_rmse": rmse / float(np.mean(m)),
        "within_10pct": float(np.mean(np.abs(p - m) <= 0.1 * m)),
    }

"""``ensemble``: aggregate several proxies by rank, over a set of candidates.

A proxy's raw values live on unrelated scales (synflow spans tens of orders of magnitude, naswot
is a log-determinant), so they are combined by rank: every proxy ranks the candidates, and a
candidate's ensemble value is its mean rank, normalised to [0, 1] (1: first on every proxy).
A rank needs several candidates, so there is no ensemble score for one model alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import rankdata

from nas_plugin.proxies.base import ProxyError

ENSEMBLE = "ensemble"
# The default members: three proxies of different kinds (data-free path norm, activation
# patterns, size) whose errors differ. Chosen by agreement with the NB201 CIFAR-10 table in
# tests/benchmarks/proxies.py (rho 0.84 there, above each member alone), not by the digits
# accuracies that benchmark trains.
DEFAULT_ENSEMBLE: tuple[str, ...] = ("synflow", "naswot", "params")


def ensemble_ranks(
    scores_per_candidate: Sequence[Mapping[str, float]],
    proxies: Sequence[str] = DEFAULT_ENSEMBLE,
) -> list[float]:
    """Each candidate's mean normalised rank over ``proxies`` (higher = more promising).

    ``scores_per_candidate[i][proxy]`` is candidate ``i``'s score; ties share their mean rank,
    and a NaN score ranks last. One candidate alone gets 1.0.
    """
    if isinstance(proxies, str) or not proxies:
        raise ProxyError(f"ensemble: proxies={proxies!r} must be a non-empty list of names")
    if ENSEMBLE in proxies:
        raise ProxyError("ensemble: an ensemble cannot be one of its own members")
    count = len(scores_per_candidate)
    if count == 0:
        return []
    total = np.zeros(count)
    for proxy in proxies:
        values = []
        for index, scores in enumerate(scores_per_candidate):
            if proxy not in scores:
                raise ProxyError(
                    f"ensemble: candidate {index} has no '{proxy}' score; it has {sorted(scores)}"
                )
            value = float(scores[proxy])
            values.append(-math.inf if math.isnan(value) else value)
        total += rankdata(values, method="average")
    mean_rank = total / len(proxies)
    if count == 1:
        return [1.0]
    return [float(r) for r in (mean_rank - 1.0) / (count - 1)]

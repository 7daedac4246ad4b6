"""Pre-screening: rank composed trial configs by a zero-cost proxy before training any of them.

A sweeper that proposes K candidates per step can train only the most promising one. This
module is pure with respect to Hydra and MLflow: it takes configs that are already composed
and returns numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from nas_plugin.proxies import DEFAULT_ENSEMBLE, ENSEMBLE, check_proxies, ensemble_ranks, score
from nas_plugin.proxies.factory import DEFAULT_FACTORY, config_device, load_factory


def rank_candidates(
    configs: Sequence[Any],
    factory: str = DEFAULT_FACTORY,
    proxy: str = "synflow",
    batch_size: int = 64,
    seed: int = 0,
    ensemble: Sequence[str] = DEFAULT_ENSEMBLE,
    device: str | None = None,
) -> list[float]:
    """One value per config, higher = more promising.

    Each config (a composed trial config, e.g. a ``DictConfig``) is built by ``factory`` into
    its untrained model and one minibatch of ``batch_size`` examples drawn with ``seed``, and
    scored by ``proxy`` (a NaN score becomes -inf). ``proxy="ensemble"`` scores every member
    of ``ensemble`` and returns each config's mean normalised rank among ``configs`` (in
    [0, 1]). Each network is scored on ``device`` (null: the config's own ``train.device``,
    the one its trial would train on; ``auto`` where it has none), in float32. Errors building
    or scoring a config propagate: such a candidate would fail its trial as well.
    """
    (name,) = check_proxies([proxy], allow_ensemble=True)
    members = check_proxies(ensemble) if name == ENSEMBLE else (name,)
    build = load_factory(factory)
    scores = []
    for cfg in configs:
        model, inputs, targets = build(cfg, batch_size, 1, seed)
        where = config_device(cfg) if device is None else device
        scores.append(score(model, inputs, targets, members, seed=seed, device=where))
    if name == ENSEMBLE:
        return ensemble_ranks(scores, members)
    # NaN (a degenerate network) sorts as least promising rather than anywhere.
    return [-math.inf if math.isnan(s[name]) else s[name] for s in scores]

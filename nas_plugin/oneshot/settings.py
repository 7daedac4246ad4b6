"""A one-shot search's settings and result (shared by the bilevel searches in
:mod:`~nas_plugin.oneshot.search` and ENAS in :mod:`~nas_plugin.oneshot.enas`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nas_plugin.strategies.oneshot import SearchOptions

METHODS = ("darts", "gdas", "proxyless", "enas")  # enas: nas_plugin/oneshot/enas.py
# Training images the derived cell's BatchNorm statistics are re-estimated on, every epoch.
DERIVED_BN_IMAGES = 512


@dataclass
class SearchSettings(SearchOptions):
    """One search's settings (``hydra/sweeper/strategy=<method>``; see its YAML): the shared
    :class:`~nas_plugin.strategies.oneshot.SearchOptions` and each method's own."""

    method: str = "darts"
    order: int = 1
    # darts / gdas: epochs that train the weights only, before the first architecture step.
    warmup_epochs: int = 0
    momentum: float = 0.9
    grad_clip: float = 5.0
    tau_max: float = 10.0
    tau_min: float = 0.1
    latency_weight: float = 0.0
    latency_beta: float = 0.6
    # A JSON look-up table saved by an earlier search (search/latency_lut.json): the same table,
    # the same search; null measures one on this machine.
    latency_table: str | None = None
    # ENAS's controller and its REINFORCE (nas_plugin/oneshot/enas.py; its lr is arch_lr).
    lstm_size: int = 64
    tanh_constant: float = 1.1
    temperature: float = 5.0
    entropy_weight: float = 1e-4
    baseline_decay: float = 0.99
    controller_steps: int = 20
    derive_samples: int = 100
    # What rewards a child (and picks the derived one): "score", the task's metric on a held-out
    # minibatch (accuracy, mIoU, mAP@0.5); "loss", exp(-its loss) there (ENAS's c / perplexity).
    reward: str = "score"
    # Filled by the search job from the app's config.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchResult:
    ops: tuple[str, ...]
    arch_str: str
    alphas: list[list[list[float]]]  # per epoch: softmax(alpha), 6 x 5
    metrics: dict[str, float]
    lut: dict[str, dict[str, float]] | None

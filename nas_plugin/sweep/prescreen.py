"""Pre-screen: the strategy proposes a pool of K candidates, a cheap ranking keeps the top k.

Only the kept candidates are trained (warm-starting the search with zero-cost proxies, as in
Abdelfattah et al., 2021). The ranking is a zero-cost proxy of each candidate's untrained
network (``rank_by: proxy``), the sweep's learned predictor once ``predictor_after`` trials have
finished (``rank_by: predictor``), or the mean of both normalised ranks (``combined``).

The screened-out candidates are told to the strategy as ``None``, the answer it already gets
for a failed trial: every strategy keeps them out of its parents, population and model.
Telling them a made-up score instead would feed a proxy's scale into the strategy's model. A
screened-out candidate the strategy proposes again is not banned: it joins a later pool and is
ranked again (its proxy score is cached), so a strategy that keeps coming back to a region is
never starved, and the predictor may rank it higher once it has learned more.

Zero-cost warm-up (``warmup_pool: N``, Abdelfattah et al., 2021's warm-up): before the
strategy's first proposal, N random candidates (seeded) are scored by the proxy and the best
``warmup_keep`` are trained first; the strategy is told their results as it would be for
candidates it proposed. The others are not told (they are random draws, not the strategy's
proposals: it may still propose them). With ``screen: false`` the strategy's own proposals
are then trained as they come, as in ``nas-plugin bench nb201``'s ``warmup_pool`` rows.

Pure with respect to Hydra and MLflow: the sweeper hands in a ``compose`` function (encoding ->
the trial's composed config) and logs what :class:`Prescreener` records. torch is imported only
when a proxy is used.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scipy.stats import rankdata

from nas_plugin.predictors import Predictor
from nas_plugin.space import Encoding, SearchSpace

log = logging.getLogger("nas_plugin.sweeper")

RANK_BY = ("proxy", "predictor", "combined")
OPTIONS = (
    "pool",
    "keep",
    "proxy",
    "ensemble",
    "rank_by",
    "predictor_after",
    "batch_size",
    "seed",
    "factory",
    "warmup_pool",
    "warmup_keep",
    "screen",
)


AUTO = "auto"


class PrescreenError(ValueError):
    """An invalid pre-screen config: the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class PrescreenConfig:
    pool: int = 10
    keep: int = 2
    proxy: str | None = "synflow"  # what was resolved: "auto" never stays here
    ensemble: tuple[str, ...] = ("synflow", "naswot", "params")
    rank_by: str = "proxy"
    predictor_after: int = 20
    batch_size: int = 64
    seed: int = 0
    factory: str = "nas_plugin.tasks.proxy_factory:proxy_inputs"
    warmup_pool: int = 0  # 0: no warm-up
    warmup_keep: int = 10
    screen: bool = True  # screen the strategy's pools (after the warm-up, if any)

    @classmethod
    def from_config(
        cls,
        options: Mapping[str, Any] | None,
        *,
        seed: int,
        estimator_config: Mapping[str, Any],
        has_predictor: bool,
        app_config: Mapping[str, Any] | None = None,
    ) -> PrescreenConfig | None:
        """The pre-screen ``hydra.sweeper.prescreen`` describes, or None for ``name: none``.

        ``seed`` (the sweep's) draws the minibatch when the config's seed is null;
        ``factory: null`` takes the ``zero_cost`` estimator's factory when that is the
        estimator, else our pipelines'; ``proxy: auto`` (the default) is the proxy measured
        best for the task of ``app_config`` (a trial's config with no searched key set) when
        our pipelines' factory builds the networks, else ``synflow``.
        """
        options = dict(options or {"name": "none"})
        name = options.pop("name", "none")
        if name in (None, "none"):
            return None
        if name != "zero_cost":
            raise PrescreenError(
                f"hydra.sweeper.prescreen.name={name!r} is unknown; allowed: ['none', 'zero_cost']"
            )
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise PrescreenError(
                f"hydra.sweeper.prescreen: unknown option(s) {unknown}; allowed: {list(OPTIONS)}"
            )
        defaults = cls()
        pool = _int("pool", options.get("pool", defaults.pool), 2)
        keep = _int("keep", options.get("keep", defaults.keep), 1)
        if keep >= pool:
            raise PrescreenError(
                f"hydra.sweeper.prescreen.keep={keep} must be smaller than pool={pool} (the "
                "pool is what the strategy proposes, keep what is trained of it)"
            )
        rank_by = options.get("rank_by", defaults.rank_by)
        if rank_by not in RANK_BY:
            raise PrescreenError(
                f"hydra.sweeper.prescreen.rank_by={rank_by!r} is unknown; allowed: {list(RANK_BY)}"
            )
        if rank_by != "proxy" and not has_predictor:
            raise PrescreenError(
                f"hydra.sweeper.prescreen.rank_by={rank_by} needs a predictor: select "
                "hydra/sweeper/predictor=gp (or mlp)"
            )
        proxy = options.get("proxy", AUTO)
        ensemble = tuple(options.get("ensemble") or defaults.ensemble)
        if proxy is None and rank_by != "predictor":
            raise PrescreenError(
                f"hydra.sweeper.prescreen.proxy=null only works with rank_by=predictor (until "
                f"the predictor is ready, no screening), not {rank_by}"
            )
        factory = options.get("factory")
        if factory is None:
            factory = (
                estimator_config.get("factory") or defaults.factory
                if estimator_config.get("name") == "zero_cost"
                else defaults.factory
            )
        if proxy == AUTO:
            proxy = auto_proxy(str(factory), app_config)
        warmup_pool, warmup_keep, screen = _warmup_options(options, defaults, proxy)
        if proxy is not None:
            _check_proxy(proxy, ensemble)
            _check_factory(factory)
        config_seed = options.get("seed")
        if config_seed is not None and (
            isinstance(config_seed, bool) or not isinstance(config_seed, int)
        ):
            raise PrescreenError(
                f"hydra.sweeper.prescreen.seed={config_seed!r} must be an integer or null"
            )
        return cls(
            pool=pool,
            keep=keep,
            proxy=proxy,
            ensemble=ensemble,
            rank_by=rank_by,
            predictor_after=_int(
                "predictor_after", options.get("predictor_after", defaults.predictor_after), 2
            ),
            batch_size=_int("batch_size", options.get("batch_size", defaults.batch_size), 1),
            seed=seed if config_seed is None else config_seed,
            factory=str(factory),
            warmup_pool=warmup_pool,
            warmup_keep=warmup_keep,
            screen=screen,
        )

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "pool": self.pool,
            "keep": self.keep,
            "proxy": self.proxy,
            "rank_by": self.rank_by,
        }
        if self.proxy == "ensemble":
            described["ensemble"] = ",".join(self.ensemble)
        if self.rank_by != "proxy":
            described["predictor_after"] = self.predictor_after
        if self.proxy is not None:
            described.update(batch_size=self.batch_size, seed=self.seed, factory=self.factory)
        if self.warmup_pool:
            described.update(warmup_pool=self.warmup_pool, warmup_keep=self.warmup_keep)
        if not self.screen:
            described["screen"] = False
        return described


@dataclass
class Screened:
    """One candidate of a pool: what ranked it and whether it was kept."""

    round: int
    position: int  # its place in the strategy's proposals (0: first)
    encoding: Encoding
    ranked_by: str  # proxy | predictor | combined | order
    value: float  # what it was ranked by (higher = kept first)
    rank: int = 0  # within its pool, 0 = best
    kept: bool = False
    proxy: float | None = None  # the proxy's score (ensemble: its normalised rank in the pool)
    proxy_scores: dict[str, float] = field(default_factory=dict)  # each member's raw score
    predicted: float | None = None  # the predictor's mean (normal-score scale with rank warp)
    error: str | None = None  # building or scoring its network failed
    warmup: bool = False  # a random draw of the warm-up, not a strategy's proposal
    trial: int | None = None  # the trial that trained it
    run_id: str | None = None


class Prescreener:
    """Draws pools from a strategy, ranks them, and hands out the kept candidates in order."""

    def __init__(
        self,
        config: PrescreenConfig,
        n_trials: int,
        compose: Callable[[Encoding], Any],
        predictor: Predictor | None = None,
        space: SearchSpace | None = None,
    ) -> None:
        if config.warmup_pool and space is None:
            raise ValueError("a warm-up draws from the search space: pass space")
        self.config = config
        self.space = space
        self._warmed_up = not config.warmup_pool
        self.n_trials = n_trials
        self.compose = compose
        self.predictor = predictor
        self.rows: list[Screened] = []
        self.screened_out: set[Encoding] = set()  # screened out and not trained (yet)
        self._proxy_cache: dict[Encoding, tuple[dict[str, float], str | None]] = {}
        self.kept: dict[Encoding, Screened] = {}
        self.seconds = 0.0  # spent screening (composing, building, scoring, predicting)
        self._queue: deque[Screened] = deque()
        self._handed_out = 0
        self._rounds = 0

    @property
    def pending(self) -> set[Encoding]:
        """Kept candidates not handed out yet: not to be proposed again meanwhile."""
        return {row.encoding for row in self._queue}

    def next(
        self,
        propose: Callable[[int, set[Encoding]], list[Encoding]],
        wanted: int,
        reject: Callable[[Encoding], None],
    ) -> list[Encoding]:
        """Up to ``wanted`` kept candidates; a new pool of ``propose(pool, exclude)`` (new
        candidates, none of ``exclude``) whenever the kept ones run out. ``reject`` tells the
        strategy about each screened-out candidate."""
        handed: list[Encoding] = []
        if not self._warmed_up:
            self._warm_up()
        while len(handed) < wanted:
            if not self._queue and not self.config.screen:
                # Warm-up done: the strategy's own proposals are trained as they come.
                handed += propose(wanted - len(handed), set(handed))
                break
            if not self._queue:
                # The sweep's last pool keeps only what is left to train.
                left = self.n_trials - self._handed_out - len(handed)
                keep = max(1, min(self.config.keep, left))
                # Nothing to rank by yet (proxy: null, predictor not ready): no pool, the
                # strategy's next `keep` proposals are trained as they come.
                size = keep if self._mode() == "order" else self.config.pool
                pool = propose(size, set(handed))
                if not pool:
                    break
                self._screen(pool, keep, reject)
            handed.append(self._queue.popleft().encoding)
        self._handed_out += len(handed)
        return handed

    def trained(self, encoding: Encoding, trial: int, run_id: str | None) -> Screened | None:
        """Note which trial trained a kept candidate; its row, if it went through a pool."""
        row = self.kept.get(encoding)
        if row is not None:
            row.trial, row.run_id = trial, run_id
        return row

    def _warm_up(self) -> None:
        """Round 0: ``warmup_pool`` distinct random candidates, the proxy's best
        ``warmup_keep`` queued first; the rest are not told to the strategy."""
        assert self.space is not None
        self._warmed_up = True
        rng = random.Random(self.config.seed)
        drawn: dict[Encoding, None] = {}
        # A space smaller than the pool gives what it has (a few draws more than its size).
        for _ in range(self.config.warmup_pool * 20):
            if len(drawn) == self.config.warmup_pool:
                break
            drawn[self.space.sample(rng)] = None
        keep = max(1, min(self.config.warmup_keep, self.n_trials, len(drawn) - 1))
        self._screen(list(drawn), keep, reject=None, mode="proxy")
        log.info(
            "Zero-cost warm-up: %d random candidates scored by %s, the best %d trained first",
            len(drawn),
            self.config.proxy,
            keep,
        )

    def _screen(
        self,
        pool: list[Encoding],
        keep: int,
        reject: Callable[[Encoding], None] | None,
        mode: str | None = None,
    ) -> None:
        """Rank ``pool``, queue its best ``keep``; ``reject`` (None: the warm-up's random draws,
        never the strategy's) is told each of the others."""
        start = time.perf_counter()
        mode = mode or self._mode()
        warmup = reject is None
        rows = [
            Screened(self._rounds, i, encoding, mode, 0.0, warmup=warmup)
            for i, encoding in enumerate(pool)
        ]
        if mode in ("proxy", "combined"):
            self._score_proxy(rows)
        if mode in ("predictor", "combined"):
            assert self.predictor is not None
            mean, _ = self.predictor.predict(pool)
            for row, predicted in zip(rows, mean, strict=True):
                row.predicted = float(predicted)
        for row, value in zip(rows, self._ranking_values(rows, mode), strict=True):
            row.value = value
        # Ties (and a pool ranked by order) keep the strategy's own order.
        order = sorted(rows, key=lambda r: (-r.value, r.position))
        for rank, row in enumerate(order):
            row.rank, row.kept = rank, rank < keep
        self.seconds += time.perf_counter() - start
        self._rounds += 1
        self.rows += rows
        for row in order:
            if row.kept:
                self._queue.append(row)
                self.kept[row.encoding] = row
                self.screened_out.discard(row.encoding)
            elif reject is not None:
                self.screened_out.add(row.encoding)
                reject(row.encoding)

    def _mode(self) -> str:
        rank_by = self.config.rank_by
        ready = (
            self.predictor is not None
            and self.predictor.ready
            and len(self.predictor.observed) >= self.config.predictor_after
        )
        if rank_by == "proxy" or ready:
            return rank_by
        # Until the predictor has enough results: the proxy, or no screening at all.
        return "proxy" if self.config.proxy is not None else "order"

    def _ranking_values(self, rows: list[Screened], mode: str) -> list[float]:
        if mode == "order":
            return [-float(row.position) for row in rows]
        if mode == "predictor":
            return [float(row.predicted) for row in rows]  # type: ignore[arg-type]
        proxy = [-math.inf if row.proxy is None else row.proxy for row in rows]
        if mode == "proxy":
            return proxy
        predicted = [float(row.predicted) for row in rows]  # type: ignore[arg-type]
        # Both on one scale: the mean of their normalised ranks in the pool.
        mean_rank = (rankdata(proxy) + rankdata(predicted)) / 2
        return [float(v) for v in (mean_rank - 1) / max(len(rows) - 1, 1)]

    def _score_proxy(self, rows: list[Screened]) -> None:
        """Each candidate's proxy score on its untrained network; a candidate whose network
        cannot be built or scored ranks last and keeps its error."""
        from nas_plugin.proxies import ENSEMBLE, ensemble_ranks, score
        from nas_plugin.proxies.factory import config_device, load_factory

        build = load_factory(self.config.factory)
        members = self.config.ensemble if self.config.proxy == ENSEMBLE else (self.config.proxy,)
        for row in rows:
            if row.encoding not in self._proxy_cache:
                scores, error = {}, None
                try:
                    cfg = self.compose(row.encoding)
                    batch_size, seed = self.config.batch_size, self.config.seed
                    model, inputs, targets = build(cfg, batch_size, 1, seed)
                    # On the device the trial would train on (train.device), in float32.
                    device = config_device(cfg)
                    scores = score(model, inputs, targets, members, seed=seed, device=device)
                except Exception as err:  # noqa: BLE001 - recorded in the screening table
                    error = f"{type(err).__name__}: {err}"
                self._proxy_cache[row.encoding] = (scores, error)
            row.proxy_scores, row.error = self._proxy_cache[row.encoding]
        scored = [row for row in rows if row.error is None]
        if self.config.proxy == ENSEMBLE:
            ranks = ensemble_ranks([row.proxy_scores for row in scored], members)
            for row, value in zip(scored, ranks, strict=True):
                row.proxy = value
        else:
            for row in scored:
                value = row.proxy_scores[self.config.proxy]  # type: ignore[index]
                # NaN (a degenerate network) ranks as least promising rather than anywhere.
                row.proxy = -math.inf if math.isnan(value) else value


def table_rows(rows: list[Screened], architecture: Callable[[Encoding], dict]) -> list[dict]:
    """The screening as flat rows (one per candidate of every pool), for a CSV."""
    table = []
    for row in rows:
        table.append(
            {
                "round": row.round,
                "position": row.position,
                "rank": row.rank,
                "kept": row.kept,
                "trial": "" if row.trial is None else row.trial,
                "ranked_by": row.ranked_by,
                "warmup": row.warmup,
                "value": row.value,
                "proxy": "" if row.proxy is None else row.proxy,
                # An ensemble's members (a single proxy's score is the proxy column).
                **{
                    f"proxy.{k}": v
                    for k, v in row.proxy_scores.items()
                    if len(row.proxy_scores) > 1
                },
                "predicted": "" if row.predicted is None else row.predicted,
                "error": row.error or "",
                "run_id": row.run_id or "",
                **architecture(row.encoding),
            }
        )
    return table


def _int(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PrescreenError(
            f"hydra.sweeper.prescreen.{key}={value!r} must be an integer >= {minimum}"
        )
    return value


def _warmup_options(
    options: Mapping[str, Any], defaults: PrescreenConfig, proxy: str | None
) -> tuple[int, int, bool]:
    """``warmup_pool``, ``warmup_keep`` and ``screen``, checked together."""
    warmup_pool = _int("warmup_pool", options.get("warmup_pool", defaults.warmup_pool), 0)
    warmup_keep = _int("warmup_keep", options.get("warmup_keep", defaults.warmup_keep), 1)
    screen = options.get("screen", defaults.screen)
    if not isinstance(screen, bool):
        raise PrescreenError(f"hydra.sweeper.prescreen.screen={screen!r} must be true or false")
    if warmup_pool and warmup_keep >= warmup_pool:
        raise PrescreenError(
            f"hydra.sweeper.prescreen.warmup_keep={warmup_keep} must be smaller than "
            f"warmup_pool={warmup_pool} (the pool is scored, the best warmup_keep are trained)"
        )
    if warmup_pool and proxy is None:
        raise PrescreenError(
            "hydra.sweeper.prescreen.warmup_pool needs a proxy (the warm-up ranks before any "
            "trial, when no predictor has learned anything): proxy=null does not warm up"
        )
    if not screen and not warmup_pool:
        raise PrescreenError(
            "hydra.sweeper.prescreen.screen=false without warmup_pool: nothing would be "
            "screened; select hydra/sweeper/prescreen=none, or set warmup_pool"
        )
    return warmup_pool, warmup_keep, screen


def auto_proxy(factory: str, app_config: Mapping[str, Any] | None) -> str:
    """What ``proxy: auto`` means: with our pipelines' factory, the proxy measured best for the
    app's task (:func:`nas_plugin.tasks.proxy_factory.recommended_proxy`); with an app's own
    factory, or no app config to tell the task by, ``synflow``."""
    if factory != PrescreenConfig.factory or app_config is None:
        return "synflow"
    from nas_plugin.tasks.proxy_factory import recommended_proxy

    return recommended_proxy(app_config)


def _check_proxy(proxy: Any, ensemble: tuple[str, ...]) -> None:
    from nas_plugin.proxies import ENSEMBLE, ProxyError, check_proxies

    try:
        check_proxies([proxy], allow_ensemble=True)
    except ProxyError as err:
        raise PrescreenError(f"hydra.sweeper.prescreen.proxy={proxy!r}: {err}") from err
    if proxy == ENSEMBLE:
        try:
            check_proxies(list(ensemble))
        except ProxyError as err:
            raise PrescreenError(
                f"hydra.sweeper.prescreen.ensemble={list(ensemble)!r}: {err}"
            ) from err


def _check_factory(factory: Any) -> None:
    from nas_plugin.proxies import ProxyError
    from nas_plugin.proxies.factory import load_factory

    try:
        load_factory(factory)  # now, so that a typo fails the sweep before its first trial
    except ProxyError as err:
        raise PrescreenError(f"hydra.sweeper.prescreen.factory: {err}") from err


def trial_metrics(row: Screened, proxy: str | None) -> dict[str, float]:
    """What a kept candidate's trial run logs about its screening."""
    metrics: dict[str, float] = {"prescreen_rank": row.rank, "prescreen_round": row.round}
    if row.proxy is not None and proxy is not None:
        metrics[f"prescreen_{proxy}"] = row.proxy
    if row.predicted is not None:
        metrics["prescreen_predicted"] = row.predicted
    if row.warmup:
        metrics["prescreen_warmup"] = 1.0  # trained first, from the warm-up's random pool
    return metrics

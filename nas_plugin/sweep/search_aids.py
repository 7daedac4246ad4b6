"""MLflow records of the pre-screen and the learned predictor (sweeper side).

Parent run: ``prescreen.csv`` (every candidate of every pool: its proxy score, predicted score,
rank in its pool, whether it was kept, whether it was a warm-up draw and the trial that
trained it), metrics
``prescreen_screened_out`` and ``prescreen_seconds``, and the predictor's held-out rank
correlation ``predictor_spearman`` / ``predictor_kendall`` (step = trials finished).
Trial runs of kept candidates: ``prescreen_<proxy>``, ``prescreen_rank``, ``prescreen_round``,
``prescreen_warmup`` (1 for the warm-up's), and ``predicted_score`` when the predictor had
predicted the trial before it finished.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from nas_plugin.leaderboard import TrialRecord
from nas_plugin.predictors import HeldOutCorrelation, PredictorError
from nas_plugin.space import Encoding, SearchSpace
from nas_plugin.sweep.compose import candidate_composer
from nas_plugin.sweep.plan import SweepConfigError, SweepPlan
from nas_plugin.sweep.prescreen import (
    PrescreenConfig,
    Prescreener,
    PrescreenError,
    table_rows,
    trial_metrics,
)

log = logging.getLogger("nas_plugin.sweeper")

PRESCREEN_TABLE = "prescreen.csv"


def log_metrics(
    client: MlflowClient, run_id: str | None, metrics: Mapping[str, float], step: int = 0
) -> None:
    """Finite metrics at ``step`` (a NaN or infinite proxy score is left out)."""
    if run_id is None:
        return
    now = int(time.time() * 1000)
    batch = [
        Metric(k, float(v), now, step)
        for k, v in metrics.items()
        if v is not None and abs(float(v)) != float("inf") and float(v) == float(v)
    ]
    if batch:
        client.log_batch(run_id, metrics=batch)


def log_table(client: MlflowClient, run_id: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """``prescreen.csv`` on the parent run (rewritten as pools are screened)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), restval="")
    writer.writeheader()
    writer.writerows(rows)
    client.log_text(run_id, out.getvalue(), PRESCREEN_TABLE)


class SearchAids:
    """The optional pre-screen and learned predictor of one sweep, and what they log.

    The sweeper calls :meth:`next_candidates` for new candidates (when there is a pre-screen),
    :meth:`after_trial` for every booked trial and :meth:`finish` at the end.
    """

    def __init__(
        self, prescreener: Prescreener | None = None, held_out: HeldOutCorrelation | None = None
    ) -> None:
        self.prescreener = prescreener
        self.held_out = held_out
        self._client: MlflowClient | None = None
        self._run_id = ""
        self._logged_rows = 0
        # trial number -> (the predictor's prediction before it learned the trial, its score)
        self.predictions: dict[int, tuple[float, float]] = {}

    @classmethod
    def from_config(
        cls,
        plan: SweepPlan,
        sweeper_cfg: Mapping[str, Any],
        compose: Callable[[list[str]], Any],
        app_config: Mapping[str, Any] | None = None,
    ) -> SearchAids:
        """The configured pre-screen and learned predictor, checked before any trial;
        ``compose``: override strings -> the trial's composed config (what a proxy scores);
        ``app_config``: a trial's config with no searched key set,
        ``compose(plan.trial_overrides({}))`` (what ``proxy: auto`` picks the task's proxy by,
        and what candidates' configs are made from)."""
        try:
            held_out = HeldOutCorrelation.from_config(
                sweeper_cfg.get("predictor"), plan.space, plan.seed
            )
            config = PrescreenConfig.from_config(
                sweeper_cfg.get("prescreen"),
                seed=plan.seed,
                estimator_config=plan.estimator_config,
                has_predictor=held_out is not None,
                app_config=app_config,
            )
        except (PredictorError, PrescreenError) as err:
            raise SweepConfigError(str(err)) from err
        if held_out is not None and plan.objective.multi:
            raise SweepConfigError(
                f"hydra.sweeper.predictor.name={held_out.predictor.model} learns one score, but "
                f"the sweep has several objectives {list(plan.objective.metrics)}; select "
                "hydra/sweeper/predictor=none"
            )
        if config is None:
            return cls(None, held_out)

        # The proxy scores the network the trial would train.
        compose_encoding = candidate_composer(plan, compose, app_config)
        predictor = held_out.predictor if held_out is not None else None
        screener = Prescreener(config, plan.n_trials, compose_encoding, predictor, plan.space)
        return cls(screener, held_out)

    def params(self) -> dict[str, Any]:
        """The parent run's params: ``prescreen.*`` and ``predictor``."""
        params: dict[str, Any] = {}
        if self.prescreener is not None:
            described = self.prescreener.config.describe()
            params.update({f"prescreen.{k}": v for k, v in described.items()})
        if self.held_out is not None:
            params["predictor"] = self.held_out.predictor.model
        return params

    def attach(self, client: MlflowClient, parent_run_id: str) -> None:
        self._client, self._run_id = client, parent_run_id

    def next_candidates(
        self,
        propose: Callable[[int, set[Encoding]], list[Encoding]],
        wanted: int,
        reject: Callable[[Encoding], None],
        space: SearchSpace,
    ) -> list[Encoding]:
        """Up to ``wanted`` candidates through the pre-screen; the table is logged per pool."""
        assert self.prescreener is not None
        batch = self.prescreener.next(propose, wanted, reject)
        if len(self.prescreener.rows) > self._logged_rows:
            self._log_table(space)
        return batch

    def after_trial(self, record: TrialRecord, finished: int) -> None:
        """A booked trial: its screening and predicted score on its run; the predictor learns
        it (after predicting it) and its held-out correlation goes on the parent run."""
        if self._client is None:
            return
        metrics: dict[str, float] = {}
        if self.prescreener is not None:
            row = self.prescreener.trained(record.encoding, record.number, record.run_id)
            if row is not None:
                metrics.update(trial_metrics(row, self.prescreener.config.proxy))
        if self.held_out is not None:
            score = record.score if record.ok and isinstance(record.score, float | int) else None
            predicted = self.held_out.observe(record.encoding, score)
            if predicted is not None:
                metrics["predicted_score"] = predicted
                assert score is not None  # a prediction is made for a scored trial only
                self.predictions[record.number] = (predicted, float(score))
            correlation = self.held_out.correlation()
            if correlation is not None:
                log_metrics(
                    self._client,
                    self._run_id,
                    {f"predictor_{k}": v for k, v in correlation.items()},
                    step=finished,
                )
        log_metrics(self._client, record.run_id, metrics)

    def finish(self, space: SearchSpace) -> None:
        """The final screening table and its totals on the parent run."""
        screener = self.prescreener
        if screener is None or self._client is None or not screener.rows:
            return
        self._log_table(space)
        log_metrics(
            self._client,
            self._run_id,
            {
                "prescreen_screened_out": len(screener.screened_out),
                "prescreen_seconds": screener.seconds,
            },
        )
        log.info(
            "Pre-screen: %d pools, %d candidates screened out by %s in %.1f s (artifact %s)",
            1 + max(row.round for row in screener.rows),
            len(screener.screened_out),
            screener.config.rank_by,
            screener.seconds,
            PRESCREEN_TABLE,
        )

    def _log_table(self, space: SearchSpace) -> None:
        assert self.prescreener is not None and self._client is not None
        log_table(self._client, self._run_id, table_rows(self.prescreener.rows, space.decode))
        self._logged_rows = len(self.prescreener.rows)

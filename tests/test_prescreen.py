"""The zero-cost pre-screen: a pool of K proposals, only the proxy's top k trained.

In process on real composed NB201 configs (digits, real proxies), and end to end as a real
multirun of our vision pipeline read back from MLflow.
"""

from __future__ import annotations

import csv
import math
import random

import pytest
from conftest import REPO, assert_plots, run_app, run_app_in_process
from hydra import compose, initialize_config_dir

from nas_plugin.predictors import Predictor
from nas_plugin.proxies import score
from nas_plugin.space import nb201
from nas_plugin.sweep.prescreen import PrescreenConfig, Prescreener, PrescreenError
from nas_plugin.tasks.vision_proxy import proxy_inputs

SPACE = nb201.search_space()
SMALL = ["model.channels=8", "model.cells_per_stage=1", "train.num_threads=1"]


@pytest.fixture(scope="module")
def compose_trial():
    """Encoding -> the trial's composed config of conf/nb201.yaml, as the sweeper composes it."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):

        def build(encoding):
            arch = [f"{key}={value}" for key, value in SPACE.decode(encoding).items()]
            return compose("nb201", overrides=[*SMALL, *arch])

        yield build


def _proposals(count: int, seed: int):
    rng = random.Random(seed)
    found: dict = {}
    while len(found) < count:
        found[SPACE.sample(rng)] = None
    return list(found)


def _config(**options):
    return PrescreenConfig.from_config(
        {"name": "zero_cost", **options},
        seed=0,
        estimator_config={"name": "full"},
        has_predictor=True,
    )


def test_keeps_the_proxys_top_k_of_each_pool_and_rejects_the_rest(compose_trial):
    config = _config(pool=5, keep=2, batch_size=32)
    proposals = iter(_proposals(10, seed=0))
    rejected = []
    screener = Prescreener(config, n_trials=4, compose=compose_trial)
    handed = screener.next(
        lambda n, exclude: [next(proposals) for _ in range(n)], 4, rejected.append
    )
    assert len(handed) == 4 and len(screener.rows) == 10 and len(rejected) == 6
    for round_ in (0, 1):
        rows = [r for r in screener.rows if r.round == round_]
        best = sorted(rows, key=lambda r: -r.proxy)[:2]
        assert {r.encoding for r in rows if r.kept} == {r.encoding for r in best}
        assert handed[2 * round_ : 2 * round_ + 2] == [r.encoding for r in best]
    assert (
        set(rejected) == screener.screened_out == {r.encoding for r in screener.rows} - set(handed)
    )
    # The score is the proxy of exactly the network the trial would train.
    row = screener.rows[0]
    model, inputs, targets = proxy_inputs(compose_trial(row.encoding), 32, 1, 0)
    assert math.isclose(
        score(model, inputs, targets, "synflow")["synflow"], row.proxy, rel_tol=1e-9
    )
    # Same seed, same screening.
    again = Prescreener(config, n_trials=4, compose=compose_trial)
    proposals = iter(_proposals(10, seed=0))
    assert again.next(lambda n, e: [next(proposals) for _ in range(n)], 4, lambda e: None) == handed
    assert [r.proxy for r in again.rows] == [r.proxy for r in screener.rows]


def test_warmup_trains_the_proxys_best_random_draws_first_and_tells_nothing_else(compose_trial):
    config = _config(warmup_pool=8, warmup_keep=3, screen=False, batch_size=16)
    proposals = iter(_proposals(10, seed=3))
    rejected, proposed = [], []

    def propose(n, exclude):
        batch = [next(proposals) for _ in range(n)]
        proposed.extend(batch)
        return batch

    screener = Prescreener(config, n_trials=6, compose=compose_trial, space=SPACE)
    first = screener.next(propose, 2, rejected.append)
    rest = screener.next(propose, 4, rejected.append)
    warm = screener.rows
    assert len(warm) == 8 and all(r.warmup and r.ranked_by == "proxy" for r in warm)
    assert len({r.encoding for r in warm}) == 8
    best = sorted(warm, key=lambda r: -r.proxy)[:3]
    # The proxy's best three are trained first, best first; then the strategy's own
    # proposals as they come (screen: false), and no random draw is told to the strategy.
    assert first + rest[:1] == [r.encoding for r in best]
    assert rest[1:] == proposed == _proposals(10, seed=3)[:3]
    assert rejected == [] and screener.screened_out == set()
    # Seeded: the same draws and the same order again.
    again = Prescreener(config, n_trials=6, compose=compose_trial, space=SPACE)
    proposals = iter(_proposals(10, seed=3))
    assert again.next(propose, 3, rejected.append) == first + rest[:1]


def test_predictor_ranks_the_pool_once_it_has_enough_results():
    # proxy: null needs no network at all: the strategy's order, then the predictor's.
    config = _config(pool=6, keep=1, proxy=None, rank_by="predictor", predictor_after=10)
    predictor = Predictor(SPACE, min_trials=2)
    screener = Prescreener(config, n_trials=10, compose=lambda e: None, predictor=predictor)
    proposals = iter(_proposals(200, seed=1))

    def propose(n, exclude):
        return [next(proposals) for _ in range(n)]

    # Nothing to rank by yet: no pool, the strategy's proposal is trained as it comes.
    first = screener.next(propose, 1, lambda e: None)
    assert len(screener.rows) == 1 and screener.rows[0].ranked_by == "order"
    assert first == [screener.rows[0].encoding] and screener.rows[0].kept
    # Teach it a score that counts convolutions; then it keeps the most convolutional cell.
    for cell in _proposals(30, seed=2):
        predictor.add(cell, sum(op.startswith("nor_conv") for _, op in cell))
    (kept,) = screener.next(propose, 1, lambda e: None)
    pool = [r for r in screener.rows if r.round == 1]
    assert all(r.ranked_by == "predictor" and r.predicted is not None for r in pool)
    assert kept == max(pool, key=lambda r: r.predicted).encoding
    convs = {r.encoding: sum(op.startswith("nor_conv") for _, op in r.encoding) for r in pool}
    assert convs[kept] == max(convs.values())


def test_combined_ranks_by_the_mean_of_proxy_and_predictor_ranks(compose_trial):
    config = _config(pool=4, keep=1, rank_by="combined", predictor_after=2, batch_size=16)
    predictor = Predictor(SPACE, min_trials=2)
    for cell in _proposals(20, seed=5):
        predictor.add(cell, sum(op == "skip_connect" for _, op in cell))
    screener = Prescreener(config, n_trials=1, compose=compose_trial, predictor=predictor)
    proposals = _proposals(4, seed=6)
    (kept,) = screener.next(lambda n, e: proposals, 1, lambda e: None)
    rows = screener.rows
    proxy_rank = {r.encoding: sorted(x.proxy for x in rows).index(r.proxy) for r in rows}
    model_rank = {r.encoding: sorted(x.predicted for x in rows).index(r.predicted) for r in rows}
    for row in rows:
        assert row.ranked_by == "combined"
        assert row.value == pytest.approx((proxy_rank[row.encoding] + model_rank[row.encoding]) / 6)
    assert kept == max(rows, key=lambda r: (r.value, -r.position)).encoding


@pytest.mark.parametrize(
    ("options", "has_predictor", "message"),
    [
        ({"keep": 5, "pool": 5}, False, "prescreen.keep=5 must be smaller than pool=5"),
        ({"pool": 1}, False, "prescreen.pool=1 must be an integer >= 2"),
        ({"proxy": "synflw"}, False, "prescreen.proxy='synflw': proxy 'synflw' is unknown"),
        ({"proxy": "ensemble", "ensemble": ["naswot", "x"]}, False, "prescreen.ensemble=["),
        ({"rank_by": "predictor"}, False, "needs a predictor: select hydra/sweeper/predictor=gp"),
        ({"rank_by": "best"}, True, "rank_by='best' is unknown; allowed: ['proxy', 'predictor'"),
        ({"proxy": None}, True, "proxy=null only works with rank_by=predictor"),
        ({"factory": "nas_plugin.tasks:nope"}, False, "prescreen.factory: factory"),
        ({"warmup_pool": 5, "warmup_keep": 5}, False, "warmup_keep=5 must be smaller than"),
        ({"warmup_pool": -1}, False, "prescreen.warmup_pool=-1 must be an integer >= 0"),
        ({"screen": False}, False, "screen=false without warmup_pool"),
        ({"screen": "no", "warmup_pool": 9}, False, "prescreen.screen='no' must be true or"),
        (
            {"warmup_pool": 20, "proxy": None, "rank_by": "predictor"},
            True,
            "warmup_pool needs a proxy",
        ),
        ({"top": 3}, False, "unknown option(s) ['top']; allowed: ['pool', 'keep'"),
    ],
)
def test_bad_prescreen_config_names_the_key(options, has_predictor, message):
    with pytest.raises(PrescreenError) as err:
        PrescreenConfig.from_config(
            {"name": "zero_cost", **options},
            seed=0,
            estimator_config={"name": "full"},
            has_predictor=has_predictor,
        )
    assert message in str(err.value)


def test_factory_defaults_to_the_zero_cost_estimators():
    config = PrescreenConfig.from_config(
        {"name": "zero_cost", "factory": None},
        seed=7,
        estimator_config={"name": "zero_cost", "factory": "nas_plugin.tasks.vision:Preprocess"},
        has_predictor=False,
    )
    assert config.factory == "nas_plugin.tasks.vision:Preprocess" and config.seed == 7
    assert (
        PrescreenConfig.from_config(None, seed=0, estimator_config={}, has_predictor=False) is None
    )


@pytest.mark.parametrize(
    ("kind", "factory", "expected"),
    [
        ("autodeeplab", None, "naswot"),  # segmentation: synflow rho 0.05, naswot 0.64
        ("spinenet", None, "naswot"),  # detection: synflow -0.29, naswot 0.70
        ("nb201", None, "synflow"),
        (None, None, "synflow"),
        ("autodeeplab", "nas_plugin.tasks.vision_proxy:proxy_inputs", "synflow"),  # not ours
    ],
)
def test_proxy_auto_is_the_proxy_measured_best_for_the_apps_task(kind, factory, expected):
    options = {"name": "zero_cost", "factory": factory}
    config = PrescreenConfig.from_config(
        options,
        seed=0,
        estimator_config={"name": "full"},
        has_predictor=False,
        app_config={"model": {"kind": kind}},
    )
    assert config.proxy == expected and config.describe()["proxy"] == expected
    # An explicit proxy is kept whatever the task.
    explicit = PrescreenConfig.from_config(
        {**options, "proxy": "snip"},
        seed=0,
        estimator_config={"name": "full"},
        has_predictor=False,
        app_config={"model": {"kind": kind}},
    )
    assert explicit.proxy == "snip"


@pytest.mark.e2e
def test_vision_sweep_trains_only_the_proxys_top_candidates_and_mlflow_has_the_screening(
    tmp_path,
):
    result = run_app(
        tmp_path,
        str(REPO / "pipelines" / "vision.py"),
        "--config-name",
        "nb201",
        "-m",
        "hydra/sweeper/estimator=full",
        "hydra.sweeper.objective.metric=val_accuracy",
        "hydra/sweeper/prescreen=zero_cost",
        "hydra.sweeper.prescreen.pool=4",
        "hydra.sweeper.prescreen.keep=2",
        "hydra.sweeper.prescreen.batch_size=32",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.leaderboard_columns=[]",
        "train.epochs=1",
        "hardware.measure=false",
        *SMALL,
    )
    assert result.proc.returncode == 0, result.output
    parent, children = result.runs("nas-nb201-tabular")
    assert parent.data.params["prescreen.pool"] == "4"
    assert parent.data.params["prescreen.proxy"] == "synflow"
    assert parent.data.metrics["prescreen_screened_out"] == 4
    client = result.client()
    with open(client.download_artifacts(parent.info.run_id, "prescreen.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8  # two pools of 4
    trained = {}
    for round_ in ("0", "1"):
        pool = [r for r in rows if r["round"] == round_]
        kept = [r for r in pool if r["kept"] == "True"]
        top = sorted(pool, key=lambda r: -float(r["proxy"]))[:2]
        assert len(kept) == 2
        # The better of the two is trained first.
        by_trial = sorted(kept, key=lambda r: int(r["trial"]))
        assert by_trial == sorted(kept, key=lambda r: -float(r["proxy"]))
        assert {r["position"] for r in kept} == {r["position"] for r in top}
        trained.update({r["trial"]: r for r in kept})
    # Exactly the kept candidates were trained, and each trial run carries its proxy score.
    assert len(children) == 4 and sorted(trained) == ["0", "1", "2", "3"]
    for child in children:
        row = trained[child.data.tags["nas.trial"]]
        assert child.data.tags["nas.status"] == "ok" and child.info.run_id == row["run_id"]
        for key in SPACE.names:
            assert child.data.params[key] == row[key]
        assert math.isclose(child.data.metrics["prescreen_synflow"], float(row["proxy"]))
        assert child.data.metrics["prescreen_rank"] in (0, 1)
        assert child.data.metrics["val_accuracy"] > 0
    assert_plots(client, parent.info.run_id, "trajectory.png", "proxy_vs_objective.png")


@pytest.mark.e2e
def test_a_bad_prescreen_config_stops_the_sweep_before_any_trial(tmp_path):
    result = run_app_in_process(
        tmp_path,
        str(REPO / "pipelines" / "vision.py"),
        "--config-name",
        "nb201",
        "-m",
        "hydra/sweeper/prescreen=zero_cost",
        "hydra.sweeper.prescreen.keep=10",
    )
    assert result.proc.returncode != 0
    assert "hydra.sweeper.prescreen.keep=10 must be smaller than pool=10" in result.output
    assert "trial 0" not in result.output


@pytest.mark.e2e
def test_warmup_sweep_trains_the_proxys_best_random_cells_first(tmp_path):
    """hydra/sweeper/prescreen=warmup: 6 random cells scored untrained, the best 2 trained as
    trials 0 and 1 (best first), then the strategy's own proposals, unscreened."""
    result = run_app_in_process(
        tmp_path,
        str(REPO / "pipelines" / "vision.py"),
        "--config-name",
        "nb201",
        "-m",
        "hydra/sweeper/strategy=bo",
        "hydra/sweeper/prescreen=warmup",
        "hydra.sweeper.prescreen.warmup_pool=6",
        "hydra.sweeper.prescreen.warmup_keep=2",
        "hydra.sweeper.prescreen.batch_size=16",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.leaderboard_columns=[]",
        *SMALL,
    )
    assert result.proc.returncode == 0, result.output
    assert "Zero-cost warm-up: 6 random candidates scored by synflow" in result.output
    parent, children = result.runs("nas-nb201-tabular")
    params = parent.data.params
    assert (params["prescreen.warmup_pool"], params["prescreen.screen"]) == ("6", "False")
    with open(result.client().download_artifacts(parent.info.run_id, "prescreen.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and all(r["warmup"] == "True" for r in rows)
    best = sorted(rows, key=lambda r: -float(r["proxy"]))[:2]
    assert [r["trial"] for r in best] == ["0", "1"]
    assert sorted(r["kept"] for r in rows) == ["False"] * 4 + ["True"] * 2
    by_trial = {c.data.tags["nas.trial"]: c for c in children}
    assert sorted(by_trial) == ["0", "1", "2", "3"]
    for row in best:
        child = by_trial[row["trial"]]
        assert child.info.run_id == row["run_id"]
        assert all(child.data.params[key] == row[key] for key in SPACE.names)
        assert child.data.metrics["prescreen_warmup"] == 1
    # After the warm-up, bo's proposals are trained as they come: not screened, not in the table.
    for number in ("2", "3"):
        assert "prescreen_warmup" not in by_trial[number].data.metrics
        assert by_trial[number].data.tags["nas.status"] == "ok"

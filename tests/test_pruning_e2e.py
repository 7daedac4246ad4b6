"""End to end: bad trials of a real multirun are stopped early by the pruner, with the basic and
the joblib launcher, by each rule, in a foreign app and in our text pipeline, and MLflow, the
leaderboard and the strategy record them as pruned."""

from __future__ import annotations

import csv
import random

import pytest
from conftest import REPO, run_app, run_app_in_process

from nas_plugin.pruning.curve import extrapolate

pytestmark = pytest.mark.e2e

# A foreign app whose learning curves are fixed by design: quality * (1 - 0.5 ** epoch), so
# every pruning decision below is exact. It reports through nas_plugin's two public entry
# points: the EpochLoop helper and a bare nas_plugin.report() call.
APP = """
import hydra
import mlflow
from omegaconf import DictConfig

import nas_plugin
from nas_plugin.pruning import EpochLoop

QUALITY = {"good": 0.9, "near": 0.85, "decent": 0.8, "fair": 0.5, "poor": 0.2, "bad": 0.1}


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg: DictConfig):
    quality = QUALITY[cfg.model.quality]
    epochs_done = 0
    if cfg.api == "loop":
        loop = EpochLoop(cfg.epochs)
        for epoch in loop:
            acc = quality * (1 - 0.5**epoch)
            mlflow.log_metric("acc", acc, step=epoch)
            loop.report({"acc": acc, "loss": 1 - acc})
            epochs_done = epoch
    else:
        for epoch in range(1, cfg.epochs + 1):
            acc = quality * (1 - 0.5**epoch)
            mlflow.log_metric("acc", acc, step=epoch)
            epochs_done = epoch
            value = {"acc": acc, "loss": 1 - acc}[cfg.metric]  # the objective, as one number
            if nas_plugin.report(epoch, value, max_step=cfg.epochs):
                break
    return {"acc": acc, "loss": 1 - acc, "epochs_done": epochs_done}


if __name__ == "__main__":
    main()
"""

CONFIG = """
defaults:
  - override hydra/sweeper: nas
  - override hydra/sweeper/strategy: grid
  - _self_
model: {quality: good, variant: a}
epochs: 8
api: loop
metric: acc
hydra:
  sweeper:
    n_trials: 4
    objective: {metric: acc, direction: maximize}
    mlflow: {experiment: pruned}
    registry: {enabled: false}
"""


def _trials(result, pruned_expected: set[int], budget: int):
    """Check every trial's MLflow record; return the children."""
    parent, children = result.runs("pruned")
    assert parent.info.status == "FINISHED"
    client = result.client()
    assert len(children) == 4
    for child in children:
        number = int(child.data.tags["nas.trial"])
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "acc")]
        reported = client.get_metric_history(child.info.run_id, "nas.intermediate")
        assert [m.step for m in reported] == steps
        # A pruned run ends FINISHED with its last value; the tags say it was pruned and where.
        assert child.info.status == "FINISHED"
        if number in pruned_expected:
            assert child.data.tags["nas.status"] == "pruned", child.data.tags
            assert max(steps) < budget
            assert child.data.tags["nas.pruned_step"] == str(max(steps))
            assert child.data.tags["nas.prune_reason"]
        else:
            assert child.data.tags["nas.status"] == "ok"
            assert "nas.pruned_step" not in child.data.tags
            assert steps == list(range(1, budget + 1))
        assert child.data.metrics["epochs_done"] == max(steps)
    assert parent.data.metrics["trials_pruned"] == len(pruned_expected)
    assert parent.data.metrics["trials_failed"] == 0
    assert parent.data.params["pruner"] != "none"
    # The leaderboard lists pruned trials after the fully trained ones, marked as such.
    path = client.download_artifacts(parent.info.run_id, "leaderboard.csv")
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    assert {int(r["trial"]) for r in rows if r["status"] == "pruned"} == pruned_expected
    statuses = [r["status"] for r in rows]
    assert statuses == sorted(statuses, key=lambda s: s == "pruned")
    assert "pruned early" in result.output
    return children


@pytest.mark.parametrize(
    ("metric", "direction", "api"), [("acc", "maximize", "loop"), ("loss", "minimize", "report")]
)
def test_asha_stops_bad_trials_with_the_basic_launcher(write_app, metric, direction, api):
    objective = f"{{metric: {metric}, direction: {direction}}}"
    cwd = write_app(APP, CONFIG)
    # Trials in grid order: fair 0.5, poor 0.2, good 0.9, bad 0.1. ASHA, rungs at 1, 2, 4
    # (eta 2; 8 is the budget): poor and bad trail at rung 1 and stop there; good beats fair.
    result = run_app_in_process(
        cwd,
        "train.py",
        "-m",
        "hydra/sweeper/pruner=asha",
        "hydra.sweeper.pruner.eta=2",
        f"api={api}",
        f"metric={metric}",
        f"hydra.sweeper.objective={objective}",
        "+hydra.sweeper.params={model.quality: [fair, poor, good, bad]}",
    )
    assert result.proc.returncode == 0, result.output
    children = _trials(result, pruned_expected={1, 3}, budget=8)
    assert {
        c.data.tags["nas.pruned_step"] for c in children if "nas.pruned_step" in c.data.tags
    } == {"1"}
    assert "pruned at step 1" in result.output  # the sweep's progress line


def test_median_stops_bad_trials_with_the_joblib_launcher(write_app):
    cwd = write_app(APP, CONFIG)
    # Two workers, no batch barrier. Trials: good/a, good/b run side by side (equal curves: never
    # below each other's median); bad/a and bad/b start only after a good trial finished, so at
    # step 2 (after one warm-up step) they are below the median and stop.
    result = run_app(
        cwd,
        "train.py",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.batch_size=2",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.min_trials=1",
        "epochs=6",
        "+hydra.sweeper.params={model.quality: [good, bad], model.variant: [a, b]}",
    )
    assert result.proc.returncode == 0, result.output
    children = _trials(result, pruned_expected={2, 3}, budget=6)
    assert [c.data.tags.get("nas.pruned_step") for c in children] == [None, None, "2", "2"]
    # Two worker processes ran the trials.
    assert len({c.data.tags["nas.worker"] for c in children}) == 2


def test_curve_stops_trials_whose_extrapolated_curve_cannot_beat_the_best(write_app):
    cwd = write_app(APP, CONFIG)
    # Grid order: good (ends at 0.8965), fair, decent, near. The power law fitted to the first 3+
    # reports predicts the value at epoch 8; a trial stops once prediction + 0.05 < the best.
    result = run_app(
        cwd,
        "train.py",
        "-m",
        "hydra/sweeper/pruner=curve",
        "hydra.sweeper.pruner.margin=0.05",
        "+hydra.sweeper.params={model.quality: [good, fair, decent, near]}",
    )
    assert result.proc.returncode == 0, result.output
    children = _trials(result, pruned_expected={1, 2}, budget=8)
    client = result.client()
    curves = [
        [(m.step, m.value) for m in client.get_metric_history(c.info.run_id, "nas.intermediate")]
        for c in children
    ]
    # fair is hopeless at its first judgement (step 3); decent looks promising at steps 3-4 and
    # is stopped at step 5, when its prediction sinks below; near (final 0.847) never does,
    # within the margin, though it ends below the best.
    assert [c.data.tags.get("nas.pruned_step") for c in children] == [None, "3", "5", None]
    best = max(v for _, v in curves[0])
    for child, curve in zip(children[1:], curves[1:], strict=True):
        stop = int(child.data.tags.get("nas.pruned_step", 0))
        for k in range(3, len(curve) + 1):
            predicted, _ = extrapolate(curve[:k], 8)
            # Judged on its own curve so far against the best of the earlier trials.
            assert (predicted + 0.05 < best) == (k == stop), (child.data.tags, k, predicted)
        if stop:
            reason = child.data.tags["nas.prune_reason"]
            predicted, _ = extrapolate(curve, 8)
            assert reason.startswith(f"curve: predicted {predicted:.4g} at step 8 (power law")
            assert f"< best so far {best:.4g}" in reason


# A text set any small transformer learns in two epochs: the label is the one sentiment word
# among filler words. Written as a CSV, read through the pipeline's `files` source.
def _reviews(path, size=600):
    rng = random.Random(0)
    filler = "the a movie film plot actor scene story was is it this that and with very".split()
    words = {
        "positive": ["great", "good", "superb", "lovely"],
        "negative": ["awful", "bad", "dull"],
    }
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for _ in range(size):
            label = rng.choice(sorted(words))
            text = rng.choices(filler, k=6)
            text.insert(rng.randrange(7), rng.choice(words[label]))
            writer.writerow([" ".join(text), label])


def test_text_pipeline_prunes_a_trial_that_does_not_learn(tmp_path):
    data = tmp_path / "reviews.csv"
    _reviews(data)
    # A 1-layer, 32-wide encoder, 3 epochs. lr 0.01 is at 100% validation accuracy by epoch 2;
    # lr 1e-6 stays at chance, below the median at epoch 2 (after one warm-up epoch): stopped.
    result = run_app_in_process(
        tmp_path,
        str(REPO / "pipelines" / "text.py"),
        "-m",
        "task.source=files",
        f"task.data_files.train={data}",
        f"task.cache_dir={tmp_path / 'datasets'}",
        f"task.tokenizer.cache_dir={tmp_path / 'tokenizers'}",
        "model.num_layers=1",
        "model.hidden_size=32",
        "model.head_dim=16",
        "model.max_length=16",
        "train.epochs=3",
        "hardware.measure=false",
        "hydra/sweeper/search_space=custom",
        "hydra/sweeper/strategy=grid",
        "train.lr=choice(0.01,0.000001)",
        "hydra.sweeper.n_trials=2",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.min_trials=1",
    )
    assert result.proc.returncode == 0, result.output
    parent, (good, bad) = result.runs("nas-text-text_classification")
    client = result.client()

    def steps(run, key):
        return [m.step for m in client.get_metric_history(run.info.run_id, key)]

    assert good.data.tags["nas.status"] == "ok" and good.data.metrics["epochs"] == 3
    assert steps(good, "nas.intermediate") == steps(good, "val_accuracy") == [1, 2, 3]
    assert good.data.metrics["val_accuracy"] > 0.9
    # The pruned trial: FINISHED, tagged pruned at epoch 2 of 3, its epochs logged up to there,
    # its last values returned, and no model logged (so never registered).
    assert bad.info.status == "FINISHED"
    assert bad.data.tags["nas.status"] == "pruned"
    assert bad.data.tags["nas.pruned_step"] == "2"
    assert "below the median" in bad.data.tags["nas.prune_reason"]
    assert steps(bad, "nas.intermediate") == steps(bad, "val_accuracy") == [1, 2]
    assert bad.data.metrics["epochs"] == 2 and bad.data.metrics["val_accuracy"] < 0.7
    assert "nas.model_uri" in good.data.tags and "nas.model_uri" not in bad.data.tags
    assert parent.data.metrics["trials_pruned"] == 1
    version = client.get_model_version_by_alias("nas-text-text_classification", "champion")
    assert version.tags["run_id"] == good.info.run_id
    assert "trial 1 pruned at step 2 val_accuracy=" in result.output

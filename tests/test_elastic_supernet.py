"""estimator=supernet over the mbconv space: the elastic (Once-for-All) supernet of the searched
space, trained once per sweep, every trial scored with inherited weights."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import REPO, perturb_supernet, predict_in_new_process, run_app_in_process
from omegaconf import OmegaConf
from timm.layers import get_act_layer

from nas_plugin.estimators import EstimatorError, make_estimator
from nas_plugin.space import SearchSpace
from nas_plugin.supernets.elastic_mbconv import ElasticConfigError, ElasticMBConv, ElasticSpace

MODEL_CFG = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / "mbconv.yaml"))
SPACE_YAML = REPO / "conf" / "plugin" / "hydra" / "sweeper" / "search_space" / "mbconv.yaml"
MBCONV_PARAMS = OmegaConf.to_container(OmegaConf.load(SPACE_YAML))["params"]
TINY_SUPERNET = "hydra.sweeper.estimator.phase_epochs={full: 1, kernel: 0, depth: 0, expand: 1}"


def _space_choices() -> dict[str, list]:
    space = SearchSpace.from_dict(MBCONV_PARAMS)
    return {p.name: list(p.values()) for p in space.params}


def test_every_candidate_of_the_mbconv_space_is_a_slice_of_the_supernet() -> None:
    """Elastic width, width_mult, squeeze-excite and activation too: the supernet's forward for
    a candidate equals the extracted standalone timm model, in eval and in train mode."""
    space = ElasticSpace.from_choices(MODEL_CFG, _space_choices())
    torch.manual_seed(0)
    supernet = ElasticMBConv(space, num_classes=10, in_chans=1)
    perturb_supernet(supernet)
    search = space.search_space()
    rng = random.Random(0)
    images = torch.rand(4, 1, 16, 16)
    outputs = []
    for arch in [search.encode(space.smallest()), *[search.sample(rng) for _ in range(6)]]:
        config = dict(arch)
        supernet.set_active(arch)
        sub = supernet.extract(arch)
        assert sub.conv_stem.out_channels == 8 * round(2 * config["model.width_mult"])
        assert isinstance(sub.bn1.act, get_act_layer(config["model.activation"]))
        with torch.no_grad():
            supernet.eval()
            expected = supernet(images)
            torch.testing.assert_close(sub.eval()(images), expected, rtol=1e-5, atol=1e-5)
        outputs.append(expected)
    assert not torch.allclose(outputs[0], outputs[1], atol=1e-3)
    # Training through a subnet updates the supernet's own weights and BatchNorm statistics.
    supernet.train()
    supernet.set_active(search.encode(space.smallest()))
    before = supernet.net.bn1.running_mean.clone()
    supernet(images).square().mean().backward()
    assert supernet.net.conv_stem.weight.grad[:8].abs().sum() > 0
    assert supernet.net.conv_stem.weight.grad[8:].abs().sum() == 0  # not in the subnet
    assert not torch.equal(supernet.net.bn1.running_mean[:8], before[:8])
    assert torch.equal(supernet.net.bn1.running_mean[8:], before[8:])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"model.stages.s2.stride": [1, 2]},
            "model.stages.s2.stride cannot be shared by the elastic supernet",
        ),
        ({"model.head_channels": [64, 128]}, "model.head_channels cannot be shared"),
        (
            {"model.stages.s2.expansion": [1, 4]},
            "model.stages.s2.expansion = [1, 4] mixes 1 (a depthwise-separable block)",
        ),
        (
            {"model.width_mult": {"low": 0.5, "high": 1.0}},
            "search space key 'model.width_mult' is a float interval",
        ),
    ],
)
def test_a_space_the_supernet_cannot_share_is_rejected(params: dict, message: str) -> None:
    estimator = make_estimator({"name": "supernet"})
    job_cfg = OmegaConf.create({"model": MODEL_CFG, "task": {"name": "digits"}})
    space = SearchSpace.from_dict({**MBCONV_PARAMS, **params})
    with pytest.raises(EstimatorError) as err:
        estimator.prepare(space, job_cfg)
    assert message in str(err.value)
    # The stock space is fine, and the trials get its values and the base model.
    prepared = make_estimator({"name": "supernet"}).prepare(
        SearchSpace.from_dict(MBCONV_PARAMS), job_cfg
    )
    assert prepared["kind"] == "mbconv"
    assert prepared["choices"]["model.stages.s2.depth"] == [1, 2, 3]
    with pytest.raises(ElasticConfigError, match=r"model.stages.s2.kernel = 9 .*expected one of"):
        ElasticSpace.from_choices(MODEL_CFG, {"model.stages.s2.kernel": [3, 9]})


def test_bad_space_in_a_foreign_app_stops_before_any_trial(write_app) -> None:
    app = write_app(
        """
        import hydra

        @hydra.main(version_base="1.3", config_path=".", config_name="config")
        def main(cfg):
            raise RuntimeError("estimator=supernet never calls the task function")

        if __name__ == "__main__":
            main()
        """,
        f"""
        defaults:
          - override hydra/sweeper: nas
          - override hydra/sweeper/search_space: mbconv
          - override hydra/sweeper/estimator: supernet
          - _self_
        task: {{name: digits, dataset: digits, resolution: 16, val_fraction: 0.15,
                test_fraction: 0.15, split_seed: 0}}
        model: {json.dumps(MODEL_CFG)}
        hydra:
          sweeper:
            n_trials: 2
            objective: {{metric: val_accuracy}}
            mlflow: {{experiment: elastic-bad, tracking_uri: "sqlite:///mlflow.db"}}
            params:
              model.stages.s3.stride: [1, 2]
        """,
    )
    run = run_app_in_process(app, "train.py", "-m")
    assert run.proc.returncode != 0
    assert "model.stages.s3.stride cannot be shared by the elastic supernet" in run.output
    assert "fix it (one value) or use another estimator" in run.output
    assert "never calls the task function" not in run.output
    client = run.client()
    experiment = client.get_experiment_by_name("elastic-bad")
    assert experiment is None or not client.search_runs([experiment.experiment_id])


def test_vision_sweep_trains_the_elastic_supernet_once_and_trials_inherit_it(
    tmp_path: Path,
) -> None:
    run = run_app_in_process(
        tmp_path,
        str(REPO / "pipelines" / "vision.py"),
        "-m",
        "hydra/sweeper/estimator=supernet",
        TINY_SUPERNET,
        f"hydra.sweeper.estimator.cache_dir={tmp_path / 'locks'}",
        "hydra.sweeper.estimator.bn_images=256",
        "hydra.sweeper.n_trials=3",
        "train.train_fraction=0.5",
        "hydra.sweeper.mlflow.experiment=elastic",
    )
    assert run.proc.returncode == 0, run.output
    parent, trials = run.runs("elastic")
    client = run.client()
    assert [t.info.status for t in trials] == ["FINISHED"] * 3
    assert sorted(t.data.tags["nas.supernet"] for t in trials) == ["loaded", "loaded", "trained"]
    (trained,) = [t for t in trials if t.data.tags["nas.supernet"] == "trained"]
    assert trained.data.metrics["supernet_train_seconds"] > 0
    for trial in trials:
        assert 0.1 < trial.data.metrics["val_accuracy"] <= 1.0  # well above chance (0.1)
        assert trial.data.params["estimator.kind"] == "mbconv"
        assert trial.data.metrics["latency_ms"] > 0  # the extracted model's, as hardware.* says
        if trial is not trained:
            assert "supernet_train_seconds" not in trial.data.metrics
    names = [a.path for a in client.list_artifacts(parent.info.run_id, "supernet")]
    weights = [n for n in names if n.endswith(".pt")]
    assert len(weights) == 1 and weights[0].replace(".pt", ".json") in names

    # The artifact alone reproduces a trial's score: rebuild the supernet of the stock space,
    # load the weights, extract the trial's candidate, score it as the trial did.
    from nas_plugin.oneshot.data import vision_data
    from nas_plugin.oneshot.spos import score_inherited
    from nas_plugin.tasks.vision_data import task_key

    state = torch.load(
        client.download_artifacts(parent.info.run_id, weights[0], str(tmp_path)),
        weights_only=True,
    )
    task = OmegaConf.load(REPO / "conf" / "task" / "digits.yaml")
    data, preprocess = vision_data(task_key(task), 0.5, 0)
    supernet = ElasticMBConv(ElasticSpace.from_choices(MODEL_CFG, _space_choices()), 10, 1)
    supernet.load_state_dict(state)
    trial = trials[-1]
    arch = {k: _param(v) for k, v in trial.data.params.items() if k.startswith("model.")}
    model = torch.nn.Sequential(preprocess, supernet.eval().extract(arch))
    metrics = score_inherited(model, data, seed=0, bn_images=256)
    assert metrics["val_accuracy"] == pytest.approx(trial.data.metrics["val_accuracy"], abs=1e-9)

    # The trials logged no model; at the end the best one's was rebuilt, logged into its run
    # and registered: it loads from the registry in a new process (no supernet code) and
    # scores on the val split what its trial scored with inherited weights.
    best = max(trials, key=lambda t: t.data.metrics["val_accuracy"])
    assert parent.data.tags["nas.best_run_id"] == best.info.run_id
    for trial in trials:
        has_model = "nas.model_uri" in client.get_run(trial.info.run_id).data.tags
        assert has_model == (trial is best)
    best_run = client.get_run(best.info.run_id)
    assert best_run.info.status == "FINISHED"
    version = client.get_model_version_by_alias("nas-vision-digits", "champion")
    assert version.tags["run_id"] == best.info.run_id
    images = torch.stack([data.val[i][0] for i in range(len(data.val))])
    labels = torch.tensor([data.val[i][1] for i in range(len(data.val))])
    shape, accuracy = predict_in_new_process(
        run.tracking_uri, "models:/nas-vision-digits@champion", images, labels, tmp_path
    )
    assert shape == (len(labels), 10)
    assert accuracy == pytest.approx(best.data.metrics["val_accuracy"], abs=1e-9)


def _param(text: str) -> object:
    return OmegaConf.create({"v": OmegaConf.from_dotlist([f"v={text}"]).v}).v

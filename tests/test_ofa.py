"""Once-for-All: elastic mbconv supernet, subnet extraction, per-budget registration."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO, clean_env, perturb_supernet, run_app_in_process
from omegaconf import OmegaConf

from nas_plugin.supernets.elastic_mbconv import ElasticConfigError, ElasticMBConv, ElasticSpace

MODEL_CFG = OmegaConf.load(REPO / "conf" / "model" / "mbconv.yaml")


@pytest.fixture(scope="module")
def supernet() -> ElasticMBConv:
    """A supernet with non-trivial weights: random BN statistics and kernel transforms."""
    torch.manual_seed(0)
    net = ElasticMBConv(ElasticSpace(MODEL_CFG), num_classes=10, in_chans=1)
    perturb_supernet(net)
    return net.eval()


def test_extracted_subnet_computes_what_the_supernet_computes(supernet: ElasticMBConv) -> None:
    space = supernet.space.search_space()
    rng = random.Random(0)
    archs = [space.encode(supernet.space.smallest()), space.encode(supernet.space.largest())]
    archs += [space.sample(rng) for _ in range(5)]
    images = torch.rand(3, 1, 16, 16)
    outputs = []
    for arch in archs:
        supernet.set_active(arch)
        sub = supernet.extract(arch).eval()
        # Standalone: only timm/torch modules, the sliced kernel sizes and depths.
        assert {type(m).__module__.split(".")[0] for m in sub.modules()} <= {"timm", "torch"}
        config = dict(arch)
        for s, stage in enumerate(sub.blocks):
            name = f"s{s + 1}"
            assert stage[0].conv_dw.kernel_size[0] == config[f"model.stages.{name}.kernel"]
            assert len(stage) == config.get(f"model.stages.{name}.depth", 1)
        with torch.no_grad():
            expected, got = supernet(images), sub(images)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        outputs.append(expected)
    # Different subnets really compute different functions (the check above is not vacuous).
    assert not torch.allclose(outputs[0], outputs[1], atol=1e-3)
    supernet.set_active(supernet.space.largest())


def test_channel_sorting_keeps_the_largest_network_and_moves_important_channels_first(
    supernet: ElasticMBConv,
) -> None:
    images = torch.rand(2, 1, 16, 16)
    supernet.set_active(supernet.space.largest())
    with torch.no_grad():
        before = supernet(images)
        supernet.sort_channels()
        after = supernet(images)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    block = supernet.net.blocks[1][0]
    importance = block.conv_pwl.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])


def test_subnet_outside_the_supernet_is_a_clear_error(supernet: ElasticMBConv) -> None:
    space = supernet.space
    with pytest.raises(ElasticConfigError, match=r"model.stages.s2.kernel = 9 .*3, 5, 7"):
        space.resolve({"model.stages.s2.kernel": 9})
    with pytest.raises(ElasticConfigError, match=r"model.activation = 'silu' .*fixed to 'relu'"):
        space.resolve({"model.activation": "silu"})
    # A full mbconv-space candidate is fine when the fixed decisions match the supernet.
    assert space.resolve({"model.stages.s3.channels": 40, "model.stages.s3.depth": 1})[2][2] == 1
    with pytest.raises(ElasticConfigError, match=r"supernet.expansions contains 1"):
        ElasticSpace(MODEL_CFG, expansions=[1, 4])


def test_bad_config_stops_before_training(tmp_path) -> None:
    from hydra import compose, initialize_config_dir

    from nas_plugin.supernets.ofa_targets import run_ofa

    store = tmp_path / "mlflow.db"
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("ofa", [f"mlflow.tracking_uri=sqlite:///{store}"])
        for override, message in [
            (
                "search.budget_unit=seconds",
                "search.budget_unit = 'seconds' is not allowed: expected one of ms, fraction",
            ),
            ("search.budgets=[0.5, -1]", "search.budgets contains -1: expected numbers > 0"),
            ("train.epochs.full=0", "train.epochs.full = 0 is not allowed"),
            ("search.latency_stat=mean", "search.latency_stat = 'mean' is not allowed"),
            ("search.strategy.population_size=0", "population_size=0 must be a positive"),
        ]:
            bad = compose("ofa", [f"mlflow.tracking_uri=sqlite:///{store}", override])
            with pytest.raises(ValueError) as err:
                run_ofa(bad)
            assert message in str(err.value), (override, str(err.value))
        # A valid config, called without a reporter that logs models: it would train for
        # nothing, so it stops first.
        with pytest.raises(RuntimeError, match="no reporter that logs them is installed"):
            run_ofa(cfg)
    assert cfg.search.budget_unit == "fraction"
    assert not store.exists()  # nothing was trained or logged


def test_ofa_app_registers_one_version_per_budget_loadable_without_supernet(tmp_path) -> None:
    run = run_app_in_process(
        tmp_path,
        str(REPO / "pipelines" / "ofa.py"),
        "train.epochs={full: 1, kernel: 1, depth: 1, expand: 1}",
        "train.train_fraction=0.3",
        "train.bn_recalibration_images=256",
        "search.candidates=4",
        "search.latency_repeats=5",
        "search.budgets=[0.4, 1.0]",
        "mlflow.model_name=ofa-test",
    )
    assert run.proc.returncode == 0, run.output
    client = run.client()
    exp = client.get_experiment_by_name("ofa-digits")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("ofa.role") == "parent"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    artifacts = [a.path for a in client.list_artifacts(parent.info.run_id, "supernet")]
    assert artifacts == ["supernet/supernet.pt"]
    assert len(parent.data.metrics) > 0 and "largest.latency_ms" in parent.data.metrics

    versions = client.search_model_versions("name='ofa-test'")
    assert len(versions) == 2
    budgets = sorted(float(v.tags["ofa.budget_ms"]) for v in versions)
    child_budgets = sorted(float(r.data.tags["ofa.budget_ms"]) for r in children)
    assert budgets == pytest.approx(child_budgets)
    assert budgets[0] < budgets[1]
    assert {v.tags["ofa.budget"] for v in versions} == {"0.4 fraction", "1.0 fraction"}
    for version in versions:
        # The winner met its budget when searched (its latency was measured at search time).
        assert float(version.tags["metric.search_latency_ms"]) <= float(
            version.tags["ofa.budget_ms"]
        )
    version = versions[0]

    # A fresh process loads the registered version and reproduces its validation accuracy,
    # without importing any supernet code.
    code = textwrap.dedent(
        f"""
        import json, sys
        import mlflow
        import numpy as np
        from omegaconf import OmegaConf
        mlflow.set_tracking_uri({run.tracking_uri!r})
        model = mlflow.pyfunc.load_model("models:/ofa-test/{version.version}")
        assert not any(m.startswith("nas_plugin.supernets") for m in sys.modules), "supernet"
        from nas_plugin.tasks.vision_data import load_vision_data
        task = OmegaConf.load({str(REPO / "conf" / "task" / "digits.yaml")!r})
        val = load_vision_data(task).val
        logits = model.predict(val.images.numpy().astype(np.float32))
        accuracy = float((logits.argmax(1) == val.labels.numpy()).mean())
        print(json.dumps({{"shape": list(logits.shape), "accuracy": accuracy}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["shape"] == [270, 10]
    assert result["accuracy"] == pytest.approx(float(version.tags["metric.val_accuracy"]), abs=1e-5)

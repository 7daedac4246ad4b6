"""HAT: the elastic transformer supernet, sandwich training, the latency predictor, the pipeline
that registers one model per latency budget, and estimator=supernet for model=transformer."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import REPO, run_app_in_process
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nas_plugin.estimators import EstimatorError, make_estimator
from nas_plugin.models.transformer import build_transformer
from nas_plugin.space import SearchSpace
from nas_plugin.supernets.elastic_transformer import (
    ElasticTransformer,
    ElasticTransformerSpace,
    SandwichSettings,
    train_sandwich,
)
from nas_plugin.supernets.latency_predictor import (
    LatencyPredictor,
    measure_latencies,
    prediction_error,
)

BASE = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / "transformer.yaml"))
CHOICES = {
    "model.num_layers": [1, 2, 3],
    "model.hidden_size": [32, 48, 64],
    "model.head_dim": [8, 16],
    "model.ffn_ratio": [1, 2, 4],
}
VOCAB = 50


def _supernet() -> ElasticTransformer:
    torch.manual_seed(0)
    net = ElasticTransformer(ElasticTransformerSpace(BASE, CHOICES), 2, VOCAB)
    with torch.no_grad():  # LayerNorms of ones and zeros would hide a slicing bug
        for name, param in net.model.named_parameters():
            if "LayerNorm" in name:
                param.normal_()
    return net.eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (3, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # a padded text
    return ids, mask


def test_a_sliced_sub_transformer_equals_a_smaller_bert_with_copied_weights() -> None:
    net = _supernet()
    ids, mask = _batch()
    big = dict(net.model.named_parameters())
    for values in (
        {
            "model.num_layers": 2,
            "model.hidden_size": 48,
            "model.head_dim": 16,
            "model.ffn_ratio": 2,
        },
        {"model.num_layers": 1, "model.hidden_size": 32, "model.head_dim": 8, "model.ffn_ratio": 1},
    ):
        layers, hidden = values["model.num_layers"], values["model.hidden_size"]
        ffn = values["model.ffn_ratio"] * hidden
        # Built explicitly: transformers' BERT of those sizes, first rows/columns copied by hand.
        cfg = {**BASE, "num_layers": layers, "hidden_size": hidden}
        cfg.update(head_dim=values["model.head_dim"], ffn_ratio=values["model.ffn_ratio"])
        small = build_transformer(cfg, 2, VOCAB).eval()
        assert small.config.num_attention_heads == hidden // values["model.head_dim"]
        with torch.no_grad():
            for name, param in small.named_parameters():
                source = big[name]
                if name.endswith("intermediate.dense.weight"):
                    param.copy_(source[:ffn, :hidden])
                elif name.endswith("intermediate.dense.bias"):
                    param.copy_(source[:ffn])
                elif name.endswith("output.dense.weight") and "attention" not in name:
                    param.copy_(source[:hidden, :ffn])
                elif name == "classifier.weight":
                    param.copy_(source[:, :hidden])
                elif name == "classifier.bias":
                    param.copy_(source)
                elif param.dim() == 2 and "embeddings" in name:
                    param.copy_(source[:, :hidden])
                elif param.dim() == 2:
                    param.copy_(source[:hidden, :hidden])
                else:
                    param.copy_(source[:hidden])
            expected = small(input_ids=ids, attention_mask=mask).logits
            got = net(ids, mask, arch=values).logits
            extracted = net.extract(values)(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(extracted, expected, rtol=1e-5, atol=1e-5)
        assert len(net.extract(values).bert.encoder.layer) == layers


def test_a_sub_transformer_trains_only_its_slice_and_a_sandwich_step_updates_shared_weights():
    net = _supernet().train()
    ids, mask = _batch()
    smallest = net.space.smallest()
    net(ids, mask, arch=smallest).logits.square().mean().backward()
    query = net.model.bert.encoder.layer[0].attention.self.query.weight
    assert query.grad[:32, :32].abs().sum() > 0
    assert query.grad[32:].abs().sum() == 0 and query.grad[:, 32:].abs().sum() == 0
    assert net.model.bert.encoder.layer[1].attention.self.query.weight.grad is None
    net.zero_grad(set_to_none=True)

    from nas_plugin.tasks.text import EncodedSplit

    gen = random.Random(0)
    rows = [[gen.randrange(1, VOCAB) for _ in range(gen.randrange(3, 10))] for _ in range(24)]
    split = EncodedSplit(rows, torch.tensor([len(r) % 2 for r in rows]).numpy())
    before = {k: v.detach().clone() for k, v in net.model.state_dict().items()}
    settings = SandwichSettings(epochs=1, batch_size=12, random_subnets=1, distill=1.0)
    metrics = train_sandwich(net, split, 0, settings, seed=0)
    after = net.model.state_dict()
    assert metrics["supernet_train_loss"] > 0
    # The largest sub-transformer trains the last layer; the smallest trains the first one's
    # shared corner; everything the sandwich uses moved.
    for key in (
        "bert.encoder.layer.2.output.dense.weight",
        "bert.embeddings.word_embeddings.weight",
    ):
        assert not torch.equal(before[key], after[key]), key
    assert not torch.equal(
        before["bert.encoder.layer.0.attention.self.query.weight"][:32, :32],
        after["bert.encoder.layer.0.attention.self.query.weight"][:32, :32],
    )


def test_latency_predictor_fits_held_out_sub_transformers() -> None:
    space = ElasticTransformerSpace(BASE, CHOICES)
    archs = [space.arch_of(v) for v in space.all_values()]

    # A latency that grows as a transformer's cost does: per layer, attention + FFN matmuls.
    def cost(a):
        return 0.2 + a.num_layers * (
            0.05 + a.hidden_size * (4 * a.hidden_size + 2 * a.intermediate_size) * 2e-6
        )

    rng = random.Random(0)
    rng.shuffle(archs)
    train, test = archs[:40], archs[40:]
    predictor = LatencyPredictor(seed=0).fit(train, [cost(a) for a in train])
    error = prediction_error(predictor.predict(test), [cost(a) for a in test])
    assert error["within_10pct"] >= 0.8 and error["relative_rmse"] < 0.1, error
    # Measured on this machine: the extracted BERTs' timings, wider ones costing more FLOPs.
    net = _supernet()
    measured = measure_latencies(net, [space.smallest(), space.largest()], 8, repeats=2)
    assert all(m["latency_ms"] > 0 for m in measured)
    assert measured[0]["flops"] < measured[1]["flops"]


@pytest.mark.parametrize(
    ("choices", "message"),
    [
        ({**CHOICES, "model.dropout": [0.0, 0.1]}, "shares weights over model.num_layers"),
        ({"model.hidden_size": [32, 48], "model.head_dim": [32]}, "does not divide"),
        ({**CHOICES, "model.num_heads": [2]}, "searches both model.head_dim and model.num_heads"),
    ],
)
def test_a_space_the_transformer_supernet_cannot_share_is_rejected(choices, message) -> None:
    space = SearchSpace.from_dict(choices)
    job = OmegaConf.create({"model": BASE, "task": {"name": "t"}})
    with pytest.raises(EstimatorError, match=message):
        make_estimator({"name": "supernet"}).prepare(space, job)
    deberta = OmegaConf.create({"model": {**BASE, "model_type": "deberta-v2"}, "task": {}})
    with pytest.raises(EstimatorError, match="set model.model_type=bert"):
        make_estimator({"name": "supernet"}).prepare(SearchSpace.from_dict(CHOICES), deberta)


def test_invalid_hat_options_fail_before_training(tmp_path) -> None:
    from nas_plugin.supernets.hat import run_hat

    store = tmp_path / "mlflow.db"
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        for override, message in [
            ("+supernet.model.dropout=[0.0,0.1]", "shares weights over model.num_layers"),
            ("model.model_type=distilbert", "set model.model_type=bert"),
            ("train.distill=-1", "train.distill = -1 is not allowed"),
            ("train.random_subnets=-1", "train.random_subnets = -1 is not allowed"),
            ("latency.holdout=1.5", "latency.holdout = 1.5 is not allowed"),
            ("latency.samples=2", "latency.samples = 2 is not allowed"),
            ("search.budgets=[]", "search.budgets = [] is not allowed"),
            ("search.budget_unit=s", "search.budget_unit = 's' is not allowed"),
            ("search.strategy.population_size=0", "population_size=0 must be a positive"),
        ]:
            bad = compose("hat", [f"mlflow.tracking_uri=sqlite:///{store}", override])
            with pytest.raises(ValueError) as err:
                run_hat(bad)
            assert message in str(err.value), (override, str(err.value))
    assert not store.exists()  # nothing was trained or logged


def test_hat_registers_one_text_model_per_budget(tmp_path) -> None:
    """In this process (a subprocess would spend most of the test importing): the app's own
    ``run_hat`` on a tiny config; the registered versions take raw text like the text task's."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from nas_plugin.supernets.hat import run_hat
    from nas_plugin.tracking.reporter import mlflow_reporting

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "hat",
            [
                f"mlflow.tracking_uri={uri}",
                f"task.tokenizer.cache_dir={tmp_path / 'tok'}",
                "task.embedded.size=120",
                "supernet.model.num_layers=[1,2]",
                "train.epochs=1",
                "latency.samples=6",
                "latency.repeats=2",
                "search.candidates=4",
                "search.budgets=[0.3, 1.0]",
                "mlflow.model_name=hat-test",
            ],
        )
    previous, threads = mlflow.get_tracking_uri(), torch.get_num_threads()
    try:
        with mlflow_reporting():
            result = run_hat(cfg)
        versions = MlflowClient(uri).search_model_versions("name='hat-test'")
        model = mlflow.pyfunc.load_model(f"models:/hat-test/{versions[0].version}")
    finally:
        mlflow.set_tracking_uri(previous)
        torch.set_num_threads(threads)
    assert all(result["versions"].values()), result
    client = MlflowClient(uri)
    parent = client.get_run(result["parent_run_id"])
    assert parent.data.tags["hat.role"] == "parent" and "predictor.rmse_ms" in parent.data.metrics
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "supernet")] == [
        "supernet/supernet.pt"
    ]
    assert len(versions) == 2
    budgets = sorted(float(v.tags["hat.budget_ms"]) for v in versions)
    assert budgets[0] < budgets[1]
    for version in versions:  # searched under the predicted latency
        tags = version.tags
        assert float(tags["metric.predicted_latency_ms"]) <= float(tags["hat.budget_ms"])
    out = model.predict(["the food was not good but the staff was friendly", "bad"])
    assert set(out["label"]) <= {"negative", "positive"} and len(out) == 2


def test_text_sweep_with_estimator_supernet_trains_the_transformer_supernet_once(tmp_path):
    run = run_app_in_process(
        tmp_path,
        str(REPO / "pipelines" / "text.py"),
        "-m",
        "hydra/sweeper/search_space=hat",
        "hydra/sweeper/estimator=supernet",
        "hydra.sweeper.estimator.epochs=1",
        f"hydra.sweeper.estimator.cache_dir={tmp_path / 'locks'}",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.mlflow.tracking_uri=sqlite:///mlflow.db",
        "task.embedded.size=100",
        "hardware.latency_repeats=2",
    )
    assert run.proc.returncode == 0, run.output
    _, trials = run.runs("nas-text-text_classification")
    assert sorted(t.data.tags["nas.supernet"] for t in trials) == ["loaded", "trained"]
    assert all("val_accuracy" in t.data.metrics and "latency_ms" in t.data.metrics for t in trials)
    assert run.client().get_model_version_by_alias("nas-text-text_classification", "champion")


def test_sandwich_training_in_fp16_steps_through_the_gradient_scaler(monkeypatch):
    # fp16 autocast and its scaler run on the CPU too (the trial's config refuses fp16 there,
    # so the runtime is built directly): every step must be scaled, unscaled, stepped.
    from nas_plugin.hardware.device import Runtime
    from nas_plugin.tasks.text import EncodedSplit

    calls: list[str] = []

    class Spy(torch.amp.GradScaler):
        def unscale_(self, optimizer):
            calls.append("unscale")
            return super().unscale_(optimizer)

        def step(self, optimizer, *args, **kwargs):
            calls.append("step")
            return super().step(optimizer, *args, **kwargs)

    monkeypatch.setattr(Runtime, "grad_scaler", lambda self: Spy("cpu"))
    net = _supernet().train()
    gen = random.Random(0)
    rows = [[gen.randrange(1, VOCAB) for _ in range(gen.randrange(3, 10))] for _ in range(24)]
    split = EncodedSplit(rows, torch.tensor([len(r) % 2 for r in rows]).numpy())
    settings = SandwichSettings(epochs=1, batch_size=12, random_subnets=1)
    before = net.model.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    metrics = train_sandwich(net, split, 0, settings, 0, Runtime(torch.device("cpu"), "16-mixed"))
    assert calls == ["unscale", "step"] * 2  # 24 rows, batches of 12; clipping unscales first
    assert 0 < metrics["supernet_train_loss"] < 10
    assert not torch.equal(before, net.model.bert.encoder.layer[0].attention.self.query.weight)

"""Auto-DeepLab's own one-shot search on the segmentation pipeline: the supernet, the Viterbi
path, reproducible darts / gdas / proxyless / enas searches that never take a clamped move,
second-order darts, real darts and enas sweeps read back from MLflow, and a latency term (not
wired for this space) refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_app_in_process, sweep_runs
from omegaconf import OmegaConf

from nas_plugin.hardware.device import Runtime
from nas_plugin.models.autodeeplab import LEVELS, AutoDeepLab, path_levels
from nas_plugin.oneshot.autodeeplab_search import AutoDeepLabArch, search_autodeeplab
from nas_plugin.oneshot.enas import Controller
from nas_plugin.oneshot.settings import SearchSettings
from nas_plugin.space import SearchSpace, autodeeplab
from nas_plugin.space.nb201 import EDGE_KEYS
from nas_plugin.space.params import parse_param
from nas_plugin.strategies import StrategyError, make_strategy
from nas_plugin.supernets.autodeeplab import (
    AutoDeepLabSupernet,
    move_probs,
    one_hot_cell,
    one_hot_path,
    sampled_path,
    viterbi_path,
)
from nas_plugin.tasks.segmentation import channel_stats
from nas_plugin.tasks.segmentation_data import load_segmentation_data
from nas_plugin.tasks.vision import Preprocess

PIPELINE = str(REPO / "pipelines" / "segmentation.py")
OPS6 = ("nor_conv_3x3", "none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3")
# Tiny settings: 120 scenes, 4 channels at 1/4, a narrow ASPP, one epoch everywhere.
TINY = [
    "task.scenes.count=120",
    "model.channels=4",
    "model.aspp.channels=8",
    "train.epochs=1",
    "train.bn_recalibration_images=64",
    "hardware.measure=false",
    "log_model=false",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_supernet_maps_images_to_per_pixel_logits_and_a_one_hot_forward_is_the_path():
    torch.manual_seed(0)
    net = AutoDeepLabSupernet(layers=4, num_classes=5, channels=4, aspp_channels=8).eval()
    images = torch.randn(2, 3, 30, 34)
    mixture = net(images, torch.full((6, 5), 0.2), move_probs(torch.zeros(4, LEVELS, 3)))
    assert mixture.shape == (2, 5, 30, 34)
    moves = ("down", "down", "up", "same")
    one_hot = net(images, one_hot_cell(OPS6), one_hot_path(moves), active_only=True)
    path = net.forward_path(images, OPS6, moves)
    torch.testing.assert_close(one_hot, path)
    standalone = AutoDeepLab(OPS6, moves, num_classes=5, channels=4, aspp_channels=8)
    assert path.shape == standalone(images).shape == mixture.shape

    # Only the path is computed: the cells off it (and the head of an unused level) get no
    # gradient, the path's cells at 1/8, 1/16, 1/8, 1/8 do.
    net.train()
    net.forward_path(images, OPS6, moves).sum().backward()
    with_grad = {
        name.split(".")[1]
        for name, p in net.named_parameters()
        if name.startswith("cells.") and p.grad is not None
    }
    assert with_grad == {"1_1", "2_2", "3_1", "4_1"}
    assert all(p.grad is None for p in net.heads["0"].parameters())


def test_viterbi_returns_the_most_probable_path_and_never_a_clamped_move():
    beta = torch.zeros(4, LEVELS, 3)
    beta[0, 0, 0] = beta[1, 1, 0] = 4.0  # down, down ...
    beta[2, 2, 1] = 4.0  # ... same at 1/16 ...
    beta[3, 2, 2] = 4.0  # ... then up to 1/8
    assert viterbi_path(move_probs(beta)) == ("down", "down", "same", "up")
    # The best first move is worth less than what it leads to: down at 1/4 (p 0.5) then a
    # sure up beats same (p 0.5) then a coin flip.
    beta = torch.zeros(2, LEVELS, 3)
    beta[1, 1, 2] = 9.0
    assert viterbi_path(move_probs(beta)) == ("down", "up")
    # Strongly preferred moves off the trellis (up at 1/4, down at 1/32) are never chosen.
    for preferred in (0, 2):
        beta = torch.zeros(6, LEVELS, 3)
        beta[:, :, preferred] = 20.0
        moves = viterbi_path(move_probs(beta))
        level = 0
        for move, after in zip(moves, path_levels(moves), strict=True):
            assert after == level + {"down": 1, "same": 0, "up": -1}[move]
            level = after
        assert moves[0] == "down"  # up is off the trellis at 1/4
        if preferred == 0:  # straight down to 1/32, where down is off the trellis
            assert path_levels(moves)[:3] == (1, 2, 3)


@pytest.fixture(scope="module")
def tiny_scenes():
    task = OmegaConf.load(REPO / "conf" / "task" / "segmentation.yaml")
    task.scenes.count = 80
    data = load_segmentation_data(task, 1.0, 0)
    mean, std = channel_stats(data)
    return data, Preprocess(int(task.resolution), mean, std)


@pytest.mark.parametrize("method", ["darts", "gdas"])
def test_a_seeded_search_is_reproducible(tiny_scenes, method):
    data, preprocess = tiny_scenes
    settings = SearchSettings(method=method, epochs=2, batch_size=16)
    arch = AutoDeepLabArch(layers=3, channels=4, aspp_channels=8, rates=(1, 2))
    logged: list[dict[str, float]] = []
    first = search_autodeeplab(settings, data, preprocess, arch, 3, lambda e, m: logged.append(m))
    again = search_autodeeplab(settings, data, preprocess, arch, 3)
    assert (first.ops, first.moves, first.alphas, first.betas) == (
        again.ops,
        again.moves,
        again.alphas,
        again.betas,
    )
    timeless = {k: v for k, v in first.metrics.items() if k != "search_seconds"}
    assert timeless == {k: v for k, v in again.metrics.items() if k != "search_seconds"}
    assert len(logged) == 2 and len(first.betas) == 2
    # Per epoch: the beta of each reachable level's valid moves (none off the trellis), the
    # derived path's levels, the derived network's val mIoU.
    assert "beta.layer_1.1_4.down" in logged[0] and "beta.layer_1.1_4.up" not in logged[0]
    assert "beta.layer_3.1_16.up" in logged[0] and "beta.layer_2.1_16.same" not in logged[0]
    levels = [logged[-1][f"search_path.layer_{k}"] for k in (1, 2, 3)]
    assert levels == [2 ** (lv + 2) for lv in path_levels(first.moves)]
    assert 0.0 <= logged[-1]["search_derived_val_miou"] <= 1.0
    assert ("search_supernet_val_miou" in logged[-1]) == (method == "darts")


def test_a_second_order_darts_search_is_reproducible_and_steps_unlike_the_first_order(
    tiny_scenes,
):
    data, preprocess = tiny_scenes
    arch = AutoDeepLabArch(layers=3, channels=4, aspp_channels=8, rates=(1,))
    second = SearchSettings(method="darts", order=2, epochs=1, batch_size=16)
    first = search_autodeeplab(second, data, preprocess, arch, 2)
    again = search_autodeeplab(second, data, preprocess, arch, 2)
    assert (first.ops, first.moves, first.alphas, first.betas) == (
        again.ops,
        again.moves,
        again.alphas,
        again.betas,
    )
    assert 0.0 < first.metrics["search_arch_loss"] < 10.0
    assert _on_trellis(first.moves)
    # The unrolled gradient moves alpha and beta elsewhere than the first-order one.
    order_1 = SearchSettings(method="darts", epochs=1, batch_size=16)
    plain = search_autodeeplab(order_1, data, preprocess, arch, 2)
    assert plain.alphas != first.alphas and plain.betas != first.betas


def test_warmup_epochs_train_only_the_weights(tiny_scenes):
    data, preprocess = tiny_scenes
    settings = SearchSettings(method="gdas", epochs=2, batch_size=16, warmup_epochs=1)
    arch = AutoDeepLabArch(layers=3, channels=4, aspp_channels=8, rates=(1,))
    logged: list[dict[str, float]] = []
    result = search_autodeeplab(settings, data, preprocess, arch, 0, lambda e, m: logged.append(m))
    # Epoch 1: alpha and beta as initialised (uniform up to 1e-3 noise), no architecture loss.
    assert "search_arch_loss" not in logged[0] and "search_arch_loss" in logged[1]
    assert max(abs(p - 0.2) for row in result.alphas[0] for p in row) < 1e-3
    assert result.alphas[1] != result.alphas[0] and result.betas[1] != result.betas[0]
    space = _space(REPO / "conf/plugin/hydra/sweeper/search_space/autodeeplab.yaml")
    with pytest.raises(StrategyError, match="warmup_epochs=10 must be an integer from 0 to"):
        make_strategy({"name": "darts", "epochs": 10, "warmup_epochs": 10}, space, 0)


def _on_trellis(moves) -> bool:
    """No move leaves 1/4 .. 1/32 (no up at 1/4, no down at 1/32)."""
    level = 0
    for move in moves:
        level += {"down": 1, "same": 0, "up": -1}[move]
        if not 0 <= level < LEVELS:
            return False
    return True


@pytest.mark.parametrize("preferred", ["down", "up"])
def test_sampled_paths_and_controller_paths_never_take_a_clamped_move(preferred):
    # beta and the controller's move head both strongly prefer a move that is off the trellis
    # at one end; the proxyless sampler and the ENAS controller must still stay on it.
    column = autodeeplab.MOVES.index(preferred)
    beta = torch.zeros(6, LEVELS, 3)
    beta[:, :, column] = 20.0
    beta.requires_grad_()
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        weights, moves = sampled_path(beta, generator)
        assert _on_trellis(moves)
    # The straight-through gate gives a gradient only to moves that are on the trellis.
    weights.sum().backward()
    off = torch.zeros(6, LEVELS, 3, dtype=torch.bool)
    off[:, 0, 2] = off[:, LEVELS - 1, 0] = True
    assert torch.all(beta.grad[off] == 0)

    torch.manual_seed(0)
    controller = Controller(layers=6)
    with torch.no_grad():
        controller.move_head.bias[column] = 50.0
    cells, log_prob, entropy = controller(batch=200, generator=torch.Generator().manual_seed(0))
    assert cells.shape == (200, 6 + 6)
    assert all(_on_trellis([autodeeplab.MOVES[m] for m in row[6:]]) for row in cells.tolist())
    (log_prob.sum() + entropy.sum()).backward()  # masked logits: finite values and gradients
    assert all(torch.isfinite(p.grad).all() for p in controller.parameters())
    # Scoring the same samples by teacher forcing gives the same log-probabilities.
    _, again, _ = controller(cells=cells)
    torch.testing.assert_close(again, log_prob.detach())


@pytest.mark.parametrize("method", ["proxyless", "enas"])
def test_a_seeded_proxyless_or_enas_search_is_reproducible_and_derives_valid_moves(
    tiny_scenes, method
):
    data, preprocess = tiny_scenes
    settings = SearchSettings(
        method=method, epochs=2, batch_size=16, controller_steps=4, derive_samples=8
    )
    arch = AutoDeepLabArch(layers=5, channels=4, aspp_channels=8, rates=(1,))
    logged: list[dict[str, float]] = []
    first = search_autodeeplab(settings, data, preprocess, arch, 1, lambda e, m: logged.append(m))
    again = search_autodeeplab(settings, data, preprocess, arch, 1)
    assert (first.ops, first.moves, first.alphas, first.betas) == (
        again.ops,
        again.moves,
        again.alphas,
        again.betas,
    )
    timeless = {k: v for k, v in first.metrics.items() if k != "search_seconds"}
    assert timeless == {k: v for k, v in again.metrics.items() if k != "search_seconds"}
    assert len(logged) == 2 and logged[-1] == first.metrics
    assert len(first.moves) == 5 and _on_trellis(first.moves)
    levels = [logged[-1][f"search_path.layer_{k}"] for k in range(1, 6)]
    assert levels == [2 ** (lv + 2) for lv in path_levels(first.moves)]
    assert "beta.layer_1.1_4.down" in logged[0] and "beta.layer_1.1_4.up" not in logged[0]
    assert 0.0 <= logged[-1]["search_derived_val_miou"] <= 1.0
    # The cell's per-edge distribution (softmax(alpha), or the controller's frequencies).
    assert all(sum(row) == pytest.approx(1.0) for row in first.alphas[-1])
    if method == "proxyless":
        assert "search_arch_loss" in logged[-1] and first.betas[1] != first.betas[0]
    else:
        assert 0.0 <= logged[-1]["search_mean_child_miou"] <= 1.0
        assert 0.0 < logged[-1]["search_controller_entropy"] < 1.61  # per decision, <= ln 5
        # The controller's move frequencies: none off the trellis.
        assert all(first.betas[-1][k][0][2] == 0 for k in range(5))
        assert all(first.betas[-1][k][LEVELS - 1][0] == 0 for k in range(5))


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)], ids=["cpu", "cuda"]
)
@pytest.mark.parametrize("method", ["darts", "gdas", "proxyless", "enas"])
def test_a_bf16_search_runs_on_the_runtime(tiny_scenes, method, device):
    data, preprocess = tiny_scenes
    settings = SearchSettings(
        method=method, epochs=1, batch_size=16, controller_steps=2, derive_samples=4
    )
    arch = AutoDeepLabArch(layers=3, channels=4, aspp_channels=8, rates=(1,))
    runtime = Runtime(torch.device(device), "bf16")
    first = search_autodeeplab(settings, data, preprocess, arch, 0, runtime=runtime)
    again = search_autodeeplab(settings, data, preprocess, arch, 0, runtime=runtime)
    assert 0.0 < first.metrics["search_train_loss"] < 10.0  # finite in bf16
    assert 0.0 <= first.metrics["search_derived_val_miou"] <= 1.0
    assert len(first.moves) == 3 and all(m in autodeeplab.MOVES for m in first.moves)
    if method != "darts":  # the same draws (CPU generator) on any device
        assert (first.ops, first.moves) == (again.ops, again.moves)


def test_an_enas_search_rewarded_by_the_loss_scores_children_by_exp_minus_their_loss(
    tiny_scenes,
):
    data, preprocess = tiny_scenes
    arch = AutoDeepLabArch(layers=3, channels=4, aspp_channels=8, rates=(1,))
    runs = {
        reward: search_autodeeplab(
            SearchSettings(
                method="enas", epochs=1, batch_size=16, controller_steps=4, derive_samples=8,
                reward=reward, arch_lr=0.05,
            ),
            data, preprocess, arch, 1,
        )
        for reward in ("score", "loss")
    }  # fmt: skip
    loss, score = runs["loss"].metrics, runs["score"].metrics
    assert "search_mean_child_miou" not in loss and "search_mean_child_exp_neg_loss" not in score
    assert 0.0 < loss["search_mean_child_exp_neg_loss"] < 1.0
    # The reward is the child's score plus the entropy bonus (1e-4 per nat): the score dominates.
    assert loss["search_mean_reward"] == pytest.approx(
        loss["search_mean_child_exp_neg_loss"], abs=1e-2
    )
    # Same seed, same first samples: the controller's updates differ with the reward.
    assert runs["loss"].alphas != runs["score"].alphas
    space = _space(REPO / "conf/plugin/hydra/sweeper/search_space/autodeeplab.yaml")
    strategy = make_strategy({"name": "enas"}, space, 0)
    assert strategy.search_settings()["reward"] == "loss"  # auto, on this space
    chosen = make_strategy({"name": "enas", "reward": "score"}, space, 0).search_settings()
    assert chosen["reward"] == "score"


def _space(path: Path) -> SearchSpace:
    params = OmegaConf.to_container(OmegaConf.load(path).params)
    return SearchSpace([parse_param(k, v) for k, v in params.items()])


def test_darts_sweep_searches_the_supernet_and_trains_the_derived_network(tmp_path):
    result = run_app_in_process(
        tmp_path,
        PIPELINE,
        "-m",
        "hydra/sweeper/strategy=darts",
        "hydra.sweeper.strategy.epochs=1",
        "hydra.sweeper.strategy.batch_size=16",
        "hydra.sweeper.mlflow.experiment=adl-darts",
        "model.decoder.skip=false",  # not searched by the supernet: the app's value is kept
        *TINY,
    )
    assert result.proc.returncode == 0, result.output
    client = result.client()
    _, searches, trials = sweep_runs(client, "adl-darts", result.output)
    (search,) = searches
    assert search.info.status == "FINISHED"
    arch_str = search.data.tags["nas.derived_arch"]
    assert search.data.params["derived_arch"] == arch_str
    cell = autodeeplab.from_arch_str(arch_str)
    assert cell["decoder.skip"] is False
    moves = [cell[f"path.layer_{k}"] for k in (1, 2, 3, 4)]
    metrics = search.data.metrics
    assert {f"alpha.{e}.nor_conv_3x3" for e in EDGE_KEYS} <= set(metrics)
    assert {"beta.layer_1.1_4.down", "beta.layer_4.1_32.up", "search_derived_val_miou"} <= set(
        metrics
    )
    assert [metrics[f"search_path.layer_{k}"] for k in (1, 2, 3, 4)] == [
        2 ** (lv + 2) for lv in path_levels(moves)
    ]
    genotype = json.loads(
        Path(client.download_artifacts(search.info.run_id, "search/genotype.json")).read_text()
    )
    assert genotype["cell"] == cell and len(genotype["beta"]) == 4

    # The derived network, trained as the sweep's one trial, linked both ways.
    (trial,) = trials
    params = trial.data.params
    assert trial.data.tags["nas.status"] == "ok"
    assert [params[f"model.cell.{e}"] for e in EDGE_KEYS] == [cell[e] for e in EDGE_KEYS]
    assert [params[f"model.path.layer_{k}"] for k in (1, 2, 3, 4)] == moves
    assert params["model.decoder.skip"] == "False"
    assert trial.data.tags["nas.search_run_id"] == search.info.run_id
    assert search.data.tags["nas.derived_run_id"] == trial.info.run_id
    assert "val_miou" in trial.data.metrics

    # A resumed sweep rebuilds the same candidate from the search run's tag.
    space = _space(REPO / "conf/plugin/hydra/sweeper/search_space/autodeeplab.yaml")
    strategy = make_strategy({"name": "darts", "prefix": "model.cell"}, space, 0)
    encoding = strategy.derive(autodeeplab.from_arch_str(arch_str))
    assert json.loads(trial.data.tags["nas.encoding"]) == space.decode(encoding)


def test_enas_sweep_searches_the_supernet_and_trains_the_derived_network(tmp_path):
    result = run_app_in_process(
        tmp_path,
        PIPELINE,
        "-m",
        "hydra/sweeper/strategy=enas",
        "hydra.sweeper.strategy.epochs=1",
        "hydra.sweeper.strategy.batch_size=16",
        "hydra.sweeper.strategy.controller_steps=3",
        "hydra.sweeper.strategy.derive_samples=4",
        "hydra.sweeper.mlflow.experiment=adl-enas",
        *TINY,
    )
    assert result.proc.returncode == 0, result.output
    client = result.client()
    _, searches, trials = sweep_runs(client, "adl-enas", result.output)
    (search,) = searches
    assert search.info.status == "FINISHED"
    assert search.data.params["search.method"] == "enas"
    cell = autodeeplab.from_arch_str(search.data.tags["nas.derived_arch"])
    moves = [cell[f"path.layer_{k}"] for k in (1, 2, 3, 4)]
    assert _on_trellis(moves)
    metrics = search.data.metrics
    # reward auto: exp(-loss) on this space (minibatch mIoU barely ranks young children)
    assert search.data.params["search.reward"] == "loss"
    assert {
        "search_mean_child_exp_neg_loss",
        "search_controller_entropy",
        "search_derived_val_miou",
    } <= set(metrics)
    assert [metrics[f"search_path.layer_{k}"] for k in (1, 2, 3, 4)] == [
        2 ** (lv + 2) for lv in path_levels(moves)
    ]
    (trial,) = trials
    params = trial.data.params
    assert trial.data.tags["nas.status"] == "ok"
    assert [params[f"model.cell.{e}"] for e in EDGE_KEYS] == [cell[e] for e in EDGE_KEYS]
    assert [params[f"model.path.layer_{k}"] for k in (1, 2, 3, 4)] == moves
    assert trial.data.tags["nas.search_run_id"] == search.info.run_id
    assert search.data.tags["nas.derived_run_id"] == trial.info.run_id
    assert 0.0 <= trial.data.metrics["val_miou"] <= 1.0
    # A resumed sweep rebuilds the same candidate from the search run's tag.
    space = _space(REPO / "conf/plugin/hydra/sweeper/search_space/autodeeplab.yaml")
    strategy = make_strategy({"name": "enas", "prefix": "model.cell"}, space, 0)
    assert json.loads(trial.data.tags["nas.encoding"]) == space.decode(strategy.derive(cell))


@pytest.mark.parametrize("method", ["gdas", "proxyless"])
def test_a_latency_term_foreign_keys_and_a_path_off_the_space_are_refused(method):
    space = _space(REPO / "conf/plugin/hydra/sweeper/search_space/autodeeplab.yaml")
    with pytest.raises(StrategyError, match=f"'{method}': latency_weight=0.5 is not allowed"):
        make_strategy({"name": method, "prefix": "model.cell", "latency_weight": 0.5}, space, 0)
    darts = make_strategy({"name": "darts", "prefix": "model.cell"}, space, 0)
    five_layers = autodeeplab.derived_cell(OPS6, ["down", "same", "same", "up", "same"], True)
    with pytest.raises(StrategyError, match=r"no key for \['model.path.layer_5'\]"):
        darts.derive(five_layers)
    extra = SearchSpace([*space.params, parse_param("model.channels", [4, 8])])
    with pytest.raises(StrategyError, match="search_space=autodeeplab"):
        make_strategy({"name": "darts", "prefix": "model.cell"}, extra, 0)

"""One-shot strategies: `searches` independent searches, their linking and resume; second-order
DARTS's virtual step; ProxylessNAS's two-path architecture step."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, run_app_in_process, sweep_runs

from nas_plugin.leaderboard import TrialRecord
from nas_plugin.space import nb201
from nas_plugin.space.nb201 import EDGE_KEYS, OPS, from_arch_str
from nas_plugin.strategies import make_strategy
from nas_plugin.supernets.nb201 import NB201Supernet, rescale_pairs, two_path_gates

CELL = ("nor_conv_3x3", "none", "avg_pool_3x3", "skip_connect", "nor_conv_1x1", "nor_conv_3x3")
TINY = ["model.channels=4", "train.epochs=1", "hardware.measure=false"]


def _cell(run) -> tuple[str, ...]:
    return tuple(run.data.params[f"model.cell.{k}"] for k in EDGE_KEYS)


@pytest.mark.e2e
def test_searches_run_independently_each_linked_to_its_trial_and_resume(
    tmp_path: Path,
) -> None:
    args = [
        str(REPO / "pipelines" / "vision.py"),
        "--config-name",
        "nb201",
        "-m",
        "hydra/sweeper/strategy=darts",
        "hydra.sweeper.strategy.order=2",
        "hydra.sweeper.strategy.epochs=1",
        # The config keeps its n_trials=100: searches, not n_trials, counts the searches.
        "hydra.sweeper.strategy.searches=2",
        "hydra/sweeper/estimator=full",
        "hydra.sweeper.objective.metric=val_accuracy",
        "hydra.sweeper.leaderboard_columns=[]",
        "hydra.sweeper.mlflow.experiment=best-of-searches",
        # A third of the digits: searches and trials alike (the search reads the same split).
        "train.train_fraction=0.3",
        *TINY,
    ]
    result = run_app_in_process(tmp_path, *args)
    assert result.proc.returncode == 0, result.output
    assert "NAS sweep: 2 searches, then at most 100 trials, strategy=darts" in result.output
    client = result.client()
    parent, searches, trials = sweep_runs(client, "best-of-searches")
    # Two searches, seeded app seed + 0 and + 1, each a finished run with its own cell...
    assert [s.data.tags["nas.search_index"] for s in searches] == ["0", "1"]
    assert [s.data.params["search.seed"] for s in searches] == ["0", "1"]
    assert all(s.info.status == "FINISHED" for s in searches)
    cells = [from_arch_str(s.data.params["derived_arch"]) for s in searches]
    assert cells[0] != cells[1], "the two seeds derived the same cell: pick other seeds"
    # ...each trained from scratch as its own trial, the two linked both ways.
    assert [_cell(t) for t in trials] == cells
    assert [t.data.tags["nas.status"] for t in trials] == ["ok", "ok"]
    for search, trial in zip(searches, trials, strict=True):
        assert trial.data.tags["nas.search_run_id"] == search.info.run_id
        assert search.data.tags["nas.derived_run_id"] == trial.info.run_id
    assert "exhausted" not in result.output
    assert parent.data.tags["nas.best_run_id"] in {t.info.run_id for t in trials}

    # Kill the sweep as it was training the second cell, with search 1 left mid-run: the
    # parent and search 1 RUNNING, trial 1 never recorded. The same command resumes it.
    client.update_run(parent.info.run_id, "RUNNING")
    client.update_run(searches[1].info.run_id, "RUNNING")
    client.set_tag(searches[1].info.run_id, "nas.status", "running")
    client.delete_run(trials[1].info.run_id)
    again = run_app_in_process(tmp_path, *args)
    assert again.proc.returncode == 0, again.output
    assert "Resuming: 1 of 2 searches are recorded and reused; 1 to run." in again.output
    parent2, searches2, trials2 = sweep_runs(client, "best-of-searches")
    assert parent2.info.run_id == parent.info.run_id and parent2.info.status == "FINISHED"
    # Search 0 was not run again; search 1 was (its killed run kept, marked interrupted) and,
    # with the same seed, derived the same cell.
    index0 = [s for s in searches2 if s.data.tags["nas.search_index"] == "0"]
    assert [s.info.run_id for s in index0] == [searches[0].info.run_id]
    killed, rerun = [s for s in searches2 if s.data.tags["nas.search_index"] == "1"]
    assert killed.info.run_id == searches[1].info.run_id and killed.info.status == "KILLED"
    assert killed.data.tags["nas.status"] == "interrupted"
    assert rerun.info.status == "FINISHED" and rerun.data.params["search.seed"] == "1"
    assert from_arch_str(rerun.data.params["derived_arch"]) == cells[1]
    # Trial 0 replayed (its run untouched), trial 1 trained now and linked to the new search.
    assert [t.info.run_id for t in trials2][:1] == [trials[0].info.run_id]
    assert [_cell(t) for t in trials2] == cells
    assert trials2[1].data.tags["nas.search_run_id"] == rerun.info.run_id
    assert rerun.data.tags["nas.derived_run_id"] == trials2[1].info.run_id


def test_searches_deriving_one_cell_share_one_trial_and_recorded_searches_are_reused(
    tmp_path: Path,
) -> None:
    from nas_plugin.oneshot.job import (
        TAG_DERIVED_ARCH,
        TAG_ROLE,
        TAG_SEARCH_INDEX,
        link_search,
        run_search_phase,
    )
    from nas_plugin.tracking.sweep_run import SweepRun, open_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_run = SweepRun(open_store(uri), uri, "resume-oneshot")
    parent = sweep_run.start(None, {}, {}, fingerprint="x")
    client = sweep_run.client
    arch = nb201.to_arch_str(CELL)

    def search_run(index: int, status: str, tags: dict[str, str]) -> str:
        run = client.create_run(
            sweep_run.experiment_id,
            tags={"mlflow.parentRunId": parent, TAG_ROLE: "search", TAG_SEARCH_INDEX: str(index)}
            | tags,
        )
        if status != "RUNNING":
            client.set_terminated(run.info.run_id, status)
        return run.info.run_id

    killed = search_run(1, "RUNNING", {"nas.status": "running"})  # the sweeper died here
    first = search_run(0, "FINISHED", {TAG_DERIVED_ARCH: arch})
    second = search_run(1, "FINISHED", {TAG_DERIVED_ARCH: arch})
    failed = search_run(2, "FAILED", {"nas.status": "failed", "nas.error": "FloatingPointError"})
    strategy = make_strategy({"name": "darts"}, nb201.search_space(), 0)
    # No Hydra context and no launcher: a launch attempt would fail.
    outcomes = run_search_phase(None, None, None, [], strategy, sweep_run, n_searches=3)
    found = [(o.index, o.run_id, o.reused) for o in outcomes]
    assert found == [(0, first, True), (1, second, True), (2, failed, True)]
    # A failed search stays failed (recorded, not rerun), and the sweep goes on without it.
    assert outcomes[2].cell is None and outcomes[2].error == "FloatingPointError"
    assert client.get_run(killed).info.status == "KILLED"
    assert client.get_run(killed).data.tags["nas.status"] == "interrupted"
    # Both searches derived CELL: one candidate, trained once; the second search says so.
    assert strategy.n_candidates == 1
    candidate = strategy.ask()
    assert candidate is not None and strategy.ask() is None
    assert tuple(dict(candidate)[f"model.cell.{k}"] for k in EDGE_KEYS) == CELL
    assert client.get_run(second).data.tags["nas.same_cell_as"] == first
    trial = client.create_run(sweep_run.experiment_id, tags={"mlflow.parentRunId": parent})
    record = TrialRecord(
        number=0,
        encoding=candidate,
        architecture=dict(candidate),
        overrides=[],
        run_id=trial.info.run_id,
    )
    link_search(client, outcomes, [record])
    assert client.get_run(record.run_id).data.tags["nas.search_run_id"] == f"{first},{second}"
    for run_id in (first, second):
        assert client.get_run(run_id).data.tags["nas.derived_run_id"] == record.run_id


def _digits_batches(n: int = 2, size: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from nas_plugin.oneshot.data import loader, vision_data
    from nas_plugin.tasks.vision_data import task_key

    task = {"name": "digits", "dataset": "digits", "resolution": 16, "val_fraction": 0.15,
            "test_fraction": 0.15, "split_seed": 0}  # fmt: skip
    data, preprocess = vision_data(task_key(task), 1.0, 0)
    x, y = next(iter(loader(data.train, n * size, 0)))
    return [(preprocess(x[i::n]), y[i::n]) for i in range(n)]


def test_second_order_darts_steps_virtually_as_the_momentum_optimiser_would() -> None:
    from nas_plugin.oneshot.bilevel import unrolled_step, virtual_step

    torch.manual_seed(0)
    torch.set_num_threads(1)
    (xw, yw), (xa, ya) = _digits_batches()
    net = NB201Supernet(channels=4, cells_per_stage=1, num_classes=10, in_chans=1)
    alpha = torch.nn.Parameter(1e-3 * torch.randn(len(EDGE_KEYS), len(OPS)))
    w_opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)

    def weight_grads() -> list[torch.Tensor]:
        loss = F.cross_entropy(net(xw, weights=F.softmax(alpha, -1)), yw)
        return list(torch.autograd.grad(loss, list(net.parameters())))

    for _ in range(2):  # real steps: the momentum buffers are non-zero
        for p, g in zip(net.parameters(), weight_grads(), strict=True):
            p.grad = g
        w_opt.step()
    # The virtual step is exactly the weights the optimiser's own next step gives.
    grads = weight_grads()
    virtual = virtual_step(w_opt, list(net.parameters()), grads)
    twin = copy.deepcopy(net)
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    twin_opt.load_state_dict(w_opt.state_dict())
    for p, g in zip(twin.parameters(), grads, strict=True):
        p.grad = g.clone()
    twin_opt.step()
    for v, p in zip(virtual, twin.parameters(), strict=True):
        assert torch.allclose(v, p, atol=1e-6)

    def arch_grad(order: int) -> torch.Tensor:
        alpha.grad = None
        if order == 2:
            arch = lambda: {"weights": F.softmax(alpha, -1)}  # noqa: E731
            unrolled_step(net, [alpha], arch, xw, yw, xa, ya, w_opt)
        else:
            F.cross_entropy(net(xa, weights=F.softmax(alpha, -1)), ya).backward()
        return alpha.grad.clone()

    first, second = arch_grad(1), arch_grad(2)
    assert torch.isfinite(second).all() and second.abs().sum() > 0
    assert not torch.allclose(first, second, rtol=1e-3, atol=1e-7)
    # The momentum buffer moves the unrolled point: without it the gradient differs.
    w_opt.param_groups[0]["momentum"] = 0.0
    assert not torch.allclose(arch_grad(2), second, rtol=1e-4, atol=1e-8)


def test_proxyless_two_path_gates_compute_two_operations_and_grade_only_their_alphas() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    alpha = torch.nn.Parameter(torch.randn(len(EDGE_KEYS), len(OPS)))
    gates, compute, pairs = two_path_gates(alpha, generator)
    # One active operation per edge, among the two sampled ones (distinct), the only computed.
    assert torch.equal(gates.detach().sum(-1), torch.ones(len(EDGE_KEYS)))
    assert (compute.sum(-1) == 2).all() and (pairs[:, 0] != pairs[:, 1]).all()
    assert (compute[gates.detach() == 1]).all()
    # BinaryConnect through the pair's softmax: dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i)
    # over the pair, and no gradient for the three unsampled operations.
    upstream = torch.randn(len(EDGE_KEYS), len(OPS))
    (gates * upstream).sum().backward()
    for e in range(len(EDGE_KEYS)):
        i, j = pairs[e].tolist()
        p = F.softmax(alpha.detach()[e, [i, j]], -1)
        g = upstream[e, [i, j]]
        expected = torch.stack([(g * p * (torch.eye(2)[k] - p[k])).sum() for k in range(2)])
        assert torch.allclose(alpha.grad[e, [i, j]], expected, atol=1e-6)
        others = [k for k in range(len(OPS)) if k not in (i, j)]
        assert (alpha.grad[e, others] == 0).all()
    # The supernet runs exactly the marked operations (the inactive one with gate 0).
    net = NB201Supernet(channels=4, cells_per_stage=1, num_classes=10, in_chans=1)
    called: set[tuple[str, str]] = set()
    cell = net.cells[0]
    for key in EDGE_KEYS:
        for op, module in cell.edges[key].items():
            module.register_forward_hook(lambda *_, k=key, o=op: called.add((k, o)))
    net(torch.randn(2, 1, 16, 16), weights=gates, compute=compute)
    marked = {
        (key, OPS[k])
        for e, key in enumerate(EDGE_KEYS)
        for k in range(len(OPS))
        if compute[e, k] and OPS[k] != "none"
    }
    assert called == marked
    # After an architecture update, rescaling keeps the unsampled operations' probabilities.
    before = alpha.detach().clone()
    with torch.no_grad():
        alpha.add_(-0.5 * alpha.grad.sign())
    rescale_pairs(alpha.data, before, pairs)
    unsampled = ~compute
    assert torch.allclose(
        F.softmax(alpha.detach(), -1)[unsampled], F.softmax(before, -1)[unsampled], atol=1e-6
    )


def test_shared_search_options_are_checked_by_name_for_every_one_shot_strategy() -> None:
    from nas_plugin.strategies import StrategyError
    from nas_plugin.strategies.oneshot import Proxyless, SearchOptions

    space = nb201.search_space()
    for name in ("darts", "gdas", "proxyless", "enas"):
        strategy = make_strategy({"name": name, "epochs": 3, "arch_lr": 0.1}, space, 0)
        settings = strategy.search_settings()
        assert (settings["method"], settings["epochs"], settings["arch_lr"]) == (name, 3, 0.1)
        assert settings["batch_size"] == SearchOptions().batch_size
        bad_lr = f"strategy '{name}': arch_lr=0 must be a number > 0"
        with pytest.raises(StrategyError, match=bad_lr):
            make_strategy({"name": name, "arch_lr": 0}, space, 0)
        with pytest.raises(StrategyError, match="epochs=1.5 must be a positive integer"):
            make_strategy({"name": name, "epochs": 1.5}, space, 0)
        with pytest.raises(StrategyError, match="searches=0 must be a positive integer"):
            make_strategy({"name": name, "searches": 0}, space, 0)
        with pytest.raises(StrategyError, match=r"unknown option\(s\) \['momentum'\]; allowed: .*"):
            make_strategy({"name": name, "momentum": 0.5}, space, 0)
    # Built directly (no make_strategy), an unknown option is still named.
    with pytest.raises(StrategyError, match=r"'proxyless': unknown option\(s\) \['tau_max'\]"):
        Proxyless(space, tau_max=1.0)

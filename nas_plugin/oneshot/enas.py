"""ENAS (Pham et al. 2018) on the NB201 cell: an LSTM controller and the shared supernet.

Every epoch alternates ENAS's two phases, on the halves of the training split the bilevel
searches use (:func:`~nas_plugin.oneshot.data.halves`; the val split stays for scoring):

(a) **shared weights**: one pass over the weight half, each step training the one path the
    controller samples (no gradient to the controller), SGD with momentum, cosine schedule,
    gradient clipping;
(b) **controller**: ``controller_steps`` REINFORCE steps, each on one sampled cell whose reward
    is its accuracy on one minibatch of the other (held-out) half with the inherited weights
    (BatchNorm in training mode, as ENAS: the supernet's running statistics mix every path),
    plus ``entropy_weight`` times the sample's entropy; the advantage is the reward minus an
    exponential moving average of past rewards (``baseline_decay``); Adam (``arch_lr``,
    ``arch_weight_decay``).

The controller (:class:`Controller`) is ENAS's: an ``LSTMCell`` that picks the operation of each
of the six edges in turn, the previous choice's embedding as the next input, logits
``tanh_constant * tanh(logits / temperature)``. Derive (ENAS's last step): ``derive_samples``
cells sampled from the trained controller, each scored on one fixed held-out batch with the
inherited weights; the best one is the search's cell.

The controller lives on the CPU whatever the runtime: it is a 64-unit LSTM run for six steps,
and every sampled operation is needed as a Python value to pick the supernet's path, so on an
accelerator it would only add a wait per decision; its draws come from a CPU generator, so a
seed derives the same cells on any device. The supernet, batches and rewards are on the
runtime's device, weight steps under its autocast (a gradient scaler for fp16).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas_plugin.hardware.device import Runtime
from nas_plugin.oneshot.bilevel import epoch_loss
from nas_plugin.oneshot.data import halves, loader
from nas_plugin.oneshot.settings import DERIVED_BN_IMAGES, SearchResult, SearchSettings
from nas_plugin.oneshot.spos import ScoringBatches, evaluate_path
from nas_plugin.space.autodeeplab import MOVES
from nas_plugin.space.nb201 import EDGE_KEYS, EDGES, OPS, to_arch_str
from nas_plugin.supernets.autodeeplab import move_mask
from nas_plugin.supernets.nb201 import NB201Supernet
from nas_plugin.tasks.training import optimizer_step
from nas_plugin.tasks.vision_data import VisionData

CONVS = ("nor_conv_1x1", "nor_conv_3x3")
# Cells sampled to estimate the controller's per-edge operation distribution each epoch.
MARGINAL_SAMPLES = 256
# Held-out images every derive candidate is scored on (one fixed batch, ENAS's valid minibatch).
DERIVE_IMAGES = 256
# A masked move's logit: exp() of it is 0 in float32, and it stays finite (no NaN gradient).
_MASKED = -1e4
# The level change of each move, in MOVES order (down, same, up).
_LEVEL_STEP = torch.tensor([1, 0, -1])


class Controller(nn.Module):
    """ENAS's controller over the NB201 cell: one LSTM step per edge, sampling its operation;
    with ``layers`` > 0 (Auto-DeepLab) it then samples one trellis move per layer from the
    current level (its own embedding and head over :data:`~nas_plugin.space.autodeeplab.MOVES`;
    a move off the trellis, ``up`` at 1/4 or ``down`` at 1/32, is masked out of the logits).

    ``forward(cells=None, batch=1, generator=None)`` samples ``batch`` architectures (or, given
    ``cells``, a ``(B, 6 + layers)`` tensor of operation then move indices, scores those:
    teacher forcing) and returns ``(cells, log_prob, entropy)``, the last two per architecture
    (summed over the decisions)."""

    def __init__(
        self,
        hidden: int = 64,
        tanh_constant: float = 1.1,
        temperature: float = 5.0,
        layers: int = 0,
    ):
        super().__init__()
        self.hidden, self.tanh_constant, self.temperature = hidden, tanh_constant, temperature
        self.layers = layers
        self.start = nn.Parameter(torch.zeros(1, hidden))  # the first step's input (g_emb)
        self.embed = nn.Embedding(len(OPS), hidden)
        self.lstm = nn.LSTMCell(hidden, hidden)
        self.head = nn.Linear(hidden, len(OPS))
        if layers:  # registered after the cell's modules: NB201's initial weights are unchanged
            self.move_embed = nn.Embedding(len(MOVES), hidden)
            self.move_head = nn.Linear(hidden, len(MOVES))
        for p in self.parameters():  # ENAS's initialiser
            nn.init.uniform_(p, -0.1, 0.1)

    def edge_logits(self, h: torch.Tensor) -> torch.Tensor:
        logits = self.head(h) / self.temperature
        return self.tanh_constant * torch.tanh(logits)

    def move_logits(self, h: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """The moves' logits from each row's level, the moves off the trellis at -1e4 (a
        probability of exactly 0, and finite, so the entropy's gradient stays finite)."""
        logits = self.tanh_constant * torch.tanh(self.move_head(h) / self.temperature)
        return logits.masked_fill(~move_mask()[levels], _MASKED)

    def forward(
        self,
        cells: torch.Tensor | None = None,
        batch: int = 1,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if cells is not None:
            batch = cells.shape[0]
        inp = self.start.expand(batch, -1)
        state = None
        chosen, log_prob, entropy = [], torch.zeros(batch), torch.zeros(batch)
        for e in range(len(EDGES)):
            state = self.lstm(inp, state)
            logits = self.edge_logits(state[0])
            log_p = F.log_softmax(logits, dim=-1)
            if cells is None:
                op = torch.multinomial(log_p.detach().exp(), 1, generator=generator).squeeze(1)
            else:
                op = cells[:, e]
            chosen.append(op)
            log_prob = log_prob + log_p.gather(1, op[:, None]).squeeze(1)
            entropy = entropy - (log_p.exp() * log_p).sum(-1)
            inp = self.embed(op)
        levels = torch.zeros(batch, dtype=torch.long)  # the path starts at 1/4
        for k in range(self.layers):
            state = self.lstm(inp, state)
            log_p = F.log_softmax(self.move_logits(state[0], levels), dim=-1)
            if cells is None:
                move = torch.multinomial(log_p.detach().exp(), 1, generator=generator).squeeze(1)
            else:
                move = cells[:, len(EDGES) + k]
            chosen.append(move)
            log_prob = log_prob + log_p.gather(1, move[:, None]).squeeze(1)
            entropy = entropy - (log_p.exp() * log_p).sum(-1)
            levels = levels + _LEVEL_STEP[move]
            inp = self.move_embed(move)
        return torch.stack(chosen, dim=1), log_prob, entropy

    def greedy(self) -> tuple[str, ...]:
        """The cell of the most likely operation at every step (given the earlier ones)."""
        return to_ops(self.greedy_indices()[: len(EDGES)])

    def greedy_indices(self) -> torch.Tensor:
        """The most likely decision at every step (given the earlier ones): 6 operation
        indices, then ``layers`` move indices."""
        with torch.no_grad():
            inp, state, chosen = self.start, None, []
            for _ in EDGES:
                state = self.lstm(inp, state)
                op = self.edge_logits(state[0]).argmax(-1)
                chosen.append(op)
                inp = self.embed(op)
            levels = torch.zeros(1, dtype=torch.long)
            for _ in range(self.layers):
                state = self.lstm(inp, state)
                move = self.move_logits(state[0], levels).argmax(-1)
                chosen.append(move)
                levels = levels + _LEVEL_STEP[move]
                inp = self.move_embed(move)
        return torch.cat(chosen)


def to_ops(cell: torch.Tensor) -> tuple[str, ...]:
    return tuple(OPS[int(k)] for k in cell)


def reinforce_step(
    controller: Controller,
    optimizer: torch.optim.Optimizer,
    log_prob: torch.Tensor,
    entropy: torch.Tensor,
    accuracy: float,
    baseline: float | None,
    settings: SearchSettings,
) -> tuple[float, float]:
    """One REINFORCE step on a sampled cell (its ``log_prob`` and ``entropy`` with their graph):
    reward = ``accuracy`` (the child's held-out score: accuracy, or mIoU on Auto-DeepLab)
    ``+ entropy_weight * entropy``, advantage = reward - moving-average
    baseline (started at the first reward). Returns ``(reward, new baseline)``."""
    reward = accuracy + settings.entropy_weight * float(entropy.detach().sum())
    if baseline is None:
        baseline = reward
    baseline = baseline - (1 - settings.baseline_decay) * (baseline - reward)
    loss = -(reward - baseline) * log_prob.sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return reward, baseline


def collapse_metrics(ops: tuple[str, ...]) -> dict[str, float]:
    """How degenerate a cell is: its ``skip_connect`` and ``none`` edges, their fraction, and
    ``collapsed`` (1: no convolution left, or 4+ of 6 edges skip/none)."""
    skip = sum(op == "skip_connect" for op in ops)
    none = sum(op == "none" for op in ops)
    dead = not any(op in CONVS for op in ops) or skip + none >= 4
    return {
        "search_skip_edges": float(skip),
        "search_none_edges": float(none),
        "search_skip_none_fraction": (skip + none) / len(ops),
        "search_collapsed": float(dead),
    }


def search_enas(
    settings: SearchSettings,
    data: VisionData,
    preprocess: nn.Module,
    channels: int,
    cells_per_stage: int,
    resolution: int,
    seed: int,
    log_epoch: Callable[[int, dict[str, float]], None] | None = None,
    *,
    runtime: Runtime | None = None,
) -> SearchResult:
    """ENAS on ``runtime`` (default: the CPU, fp32); same contract as
    :func:`~nas_plugin.oneshot.search.search` (``alphas``: the controller's per-edge operation
    frequencies over :data:`MARGINAL_SAMPLES` sampled cells, per epoch)."""
    del resolution  # no latency term
    runtime = runtime or Runtime.cpu()
    device = runtime.device
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = runtime.prepare(NB201Supernet(channels, cells_per_stage, data.num_classes, data.in_chans))
    controller = Controller(settings.lstm_size, settings.tanh_constant, settings.temperature)
    preprocess = copy.deepcopy(preprocess).to(device)
    w_opt = torch.optim.SGD(
        net.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        nesterov=settings.momentum > 0,  # ENAS's child optimiser
    )
    c_opt = torch.optim.Adam(
        controller.parameters(), lr=settings.arch_lr, weight_decay=settings.arch_weight_decay
    )
    w_half, a_half = halves(data.augmented_train, seed)
    w_batches = loader(w_half, settings.batch_size, seed, data)
    a_batches = loader(a_half, settings.batch_size, seed + 1, data)
    scoring = ScoringBatches.of(data, DERIVED_BN_IMAGES, seed)
    w_scaler = runtime.grad_scaler()
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        w_opt, settings.epochs * len(w_batches), eta_min=1e-3 * settings.lr
    )

    def accuracy(ops: tuple[str, ...], x: torch.Tensor, y: torch.Tensor) -> float:
        # Training-mode BatchNorm (the batch's statistics, as ENAS): no gradient.
        with torch.no_grad(), runtime.autocast():
            return float((net(x, path=ops).argmax(-1) == y).float().mean())

    def held_out() -> tuple[torch.Tensor, torch.Tensor]:
        x, y = next(iter(loader(a_half, DERIVE_IMAGES, seed + 2, data)))
        return preprocess(runtime.to_device(x)), runtime.to_device(y)

    alphas: list[list[list[float]]] = []
    metrics: dict[str, float] = {}
    baseline: float | None = None
    a_iter = iter(a_batches)
    start = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        # (a) the shared weights, one controller-sampled path per step
        net.train()
        controller.eval()
        w_total = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        for xw, yw in w_batches:
            xw, yw = preprocess(runtime.to_device(xw)), runtime.to_device(yw)
            with torch.no_grad():
                cell, _, _ = controller(generator=generator)
            with runtime.autocast():
                logits = net(xw, path=to_ops(cell[0]))
            loss = F.cross_entropy(logits.float(), yw)
            optimizer_step(loss, w_opt, w_scaler, schedule, settings.grad_clip)
            w_total += loss.detach().double() * len(yw)
            seen += len(yw)
        train_loss = epoch_loss(w_total, seen, epoch)
        # (b) the controller, by REINFORCE on held-out minibatches
        controller.train()
        rewards, accuracies, entropies = [], [], []
        for _ in range(settings.controller_steps):
            try:
                xa, ya = next(a_iter)
            except StopIteration:
                a_iter = iter(a_batches)
                xa, ya = next(a_iter)
            xa, ya = preprocess(runtime.to_device(xa)), runtime.to_device(ya)
            cell, log_prob, entropy = controller(generator=generator)
            acc = accuracy(to_ops(cell[0]), xa, ya)
            reward, baseline = reinforce_step(
                controller, c_opt, log_prob, entropy, acc, baseline, settings
            )
            rewards.append(reward)
            accuracies.append(acc)
            entropies.append(float(entropy.detach().sum()) / len(EDGES))
        controller.eval()
        with torch.no_grad():
            samples, _, _ = controller(batch=MARGINAL_SAMPLES, generator=generator)
        freqs = F.one_hot(samples, len(OPS)).float().mean(0)  # edges x ops
        alphas.append(freqs.tolist())
        final = epoch == settings.epochs
        ops = derive_cell(controller, settings, generator, accuracy, held_out()) if final else None
        ops = ops or controller.greedy()
        _, scored = evaluate_path(
            net,
            preprocess,
            data,
            ops,
            seed,
            bn_images=DERIVED_BN_IMAGES,
            runtime=runtime,
            batches=scoring,
        )
        metrics = {
            **{
                f"alpha.{key}.{op}": float(freqs[e, k])
                for e, key in enumerate(EDGE_KEYS)
                for k, op in enumerate(OPS)
            },
            "search_train_loss": train_loss,
            "search_mean_reward": sum(rewards) / max(1, len(rewards)),
            "search_mean_child_accuracy": sum(accuracies) / max(1, len(accuracies)),
            "search_baseline": float(baseline) if baseline is not None else 0.0,
            # Mean entropy per decision, nats (uniform: ln 5 = 1.609; 0: one cell always).
            "search_controller_entropy": sum(entropies) / max(1, len(entropies)),
            "search_derived_val_accuracy": scored["val_accuracy"],
            **collapse_metrics(ops),
            "search_seconds": time.perf_counter() - start,
        }
        if log_epoch is not None:
            log_epoch(epoch, metrics)
    return SearchResult(ops, to_arch_str(ops), alphas, metrics, None)


def derive_cell(
    controller: Controller,
    settings: SearchSettings,
    generator: torch.Generator,
    accuracy: Callable[[Any, torch.Tensor, torch.Tensor], float],
    batch: tuple[torch.Tensor, torch.Tensor],
    decode: Callable[[torch.Tensor], Any] = to_ops,
) -> Any:
    """ENAS's derive step: ``derive_samples`` architectures from the controller, each decoded
    (default: the NB201 cell's operations; distinct ones scored once), the one of best
    inherited score ``accuracy(arch, *batch)`` (ties: the first sampled)."""
    with torch.no_grad():
        cells, _, _ = controller(batch=settings.derive_samples, generator=generator)
    best, best_acc, scored = None, -1.0, set()
    for row in cells:
        arch = decode(row)
        if arch in scored:
            continue
        scored.add(arch)
        acc = accuracy(arch, *batch)
        if acc > best_acc:
            best, best_acc = arch, acc
    assert best is not None
    return best

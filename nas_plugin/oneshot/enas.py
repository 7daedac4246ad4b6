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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

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


class ChoiceController(nn.Module):
    """ENAS's controller over a fixed sequence of categorical decisions of their own sizes
    (``sizes``; on SpineNet every searched key, in sorted order): one LSTM step per decision,
    each with its own head over its values and its own embedding of the value taken (the next
    step's input). ``forward`` and :meth:`greedy_indices` as :class:`Controller`'s."""

    def __init__(
        self,
        sizes: list[int],
        hidden: int = 64,
        tanh_constant: float = 1.1,
        temperature: float = 5.0,
    ):
        super().__init__()
        self.sizes = list(sizes)
        self.hidden, self.tanh_constant, self.temperature = hidden, tanh_constant, temperature
        self.start = nn.Parameter(torch.zeros(1, hidden))
        self.lstm = nn.LSTMCell(hidden, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in self.sizes)
        self.embeds = nn.ModuleList(nn.Embedding(n, hidden) for n in self.sizes)
        for p in self.parameters():  # ENAS's initialiser
            nn.init.uniform_(p, -0.1, 0.1)

    def logits(self, k: int, h: torch.Tensor) -> torch.Tensor:
        return self.tanh_constant * torch.tanh(self.heads[k](h) / self.temperature)

    def forward(
        self,
        rows: torch.Tensor | None = None,
        batch: int = 1,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if rows is not None:
            batch = rows.shape[0]
        inp, state = self.start.expand(batch, -1), None
        chosen, log_prob, entropy = [], torch.zeros(batch), torch.zeros(batch)
        for k in range(len(self.sizes)):
            state = self.lstm(inp, state)
            log_p = F.log_softmax(self.logits(k, state[0]), dim=-1)
            if rows is None:
                value = torch.multinomial(log_p.detach().exp(), 1, generator=generator)[:, 0]
            else:
                value = rows[:, k]
            chosen.append(value)
            log_prob = log_prob + log_p.gather(1, value[:, None]).squeeze(1)
            entropy = entropy - (log_p.exp() * log_p).sum(-1)
            inp = self.embeds[k](value)
        return torch.stack(chosen, dim=1), log_prob, entropy

    def greedy_indices(self) -> torch.Tensor:
        """The most likely value of every decision (given the earlier ones)."""
        with torch.no_grad():
            inp, state, chosen = self.start, None, []
            for k in range(len(self.sizes)):
                state = self.lstm(inp, state)
                value = self.logits(k, state[0]).argmax(-1)
                chosen.append(value)
                inp = self.embeds[k](value)
        return torch.cat(chosen)

    def frequencies(self, samples: torch.Tensor) -> list[list[float]]:
        """Per decision, how often ``samples`` (rows of value indices) took each value."""
        return [
            torch.bincount(samples[:, k], minlength=n).div(len(samples)).tolist()
            for k, n in enumerate(self.sizes)
        ]


def to_ops(cell: torch.Tensor) -> tuple[str, ...]:
    return tuple(OPS[int(k)] for k in cell)


@dataclass
class EnasTraining:
    """ENAS's optimisers and data: the shared weights' SGD (Nesterov momentum, the child
    optimiser of ENAS) with a cosine schedule over the epochs' steps to 1e-3 of the lr, on the
    weight half's batches; the controller's Adam; the other half's batches for its rewards."""

    w_opt: torch.optim.SGD
    c_opt: torch.optim.Adam
    w_half: Any
    a_half: Any
    w_batches: DataLoader
    a_batches: DataLoader
    w_scaler: torch.amp.GradScaler
    schedule: torch.optim.lr_scheduler.CosineAnnealingLR

    @classmethod
    def of(
        cls,
        net: nn.Module,
        controller: nn.Module,
        data: Any,
        settings: SearchSettings,
        seed: int,
        runtime: Runtime,
    ) -> EnasTraining:
        """Raises ValueError: a half of ``data``'s training split holds no batch."""
        w_opt = torch.optim.SGD(
            net.parameters(),
            lr=settings.lr,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
            nesterov=settings.momentum > 0,
        )
        c_opt = torch.optim.Adam(
            controller.parameters(), lr=settings.arch_lr, weight_decay=settings.arch_weight_decay
        )
        w_half, a_half = halves(data.augmented_train, seed)
        w_batches = loader(w_half, settings.batch_size, seed, data)
        a_batches = loader(a_half, settings.batch_size, seed + 1, data)
        if min(len(w_batches), len(a_batches)) == 0:
            raise ValueError(
                f"the training split has {len(data.train)} image(s): too few for two halves of "
                f"batch_size={settings.batch_size}"
            )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            w_opt, settings.epochs * len(w_batches), eta_min=1e-3 * settings.lr
        )
        return cls(
            w_opt, c_opt, w_half, a_half, w_batches, a_batches, runtime.grad_scaler(), schedule
        )

    def reward_batches(self) -> Iterator[Any]:
        """The reward half's batches, endlessly (a new shuffle every pass)."""
        while True:
            yield from self.a_batches

    def train_weights(
        self,
        controller: nn.Module,
        generator: torch.Generator,
        grad_clip: float,
        epoch: int,
        child_loss: Callable[[torch.Tensor, Any], tuple[torch.Tensor, int]],
    ) -> float:
        """ENAS's phase (a), the shared weights: one pass over the weight half, each step
        training one child the controller samples; ``child_loss(row, batch)`` gives its loss
        (the network in train mode) and the batch's size. Returns the epoch's mean loss.

        Raises:
            FloatingPointError: the loss became NaN or infinite."""
        controller.eval()
        total: torch.Tensor | None = None
        seen = 0
        for batch in self.w_batches:
            with torch.no_grad():
                sample, _, _ = controller(generator=generator)
            loss, count = child_loss(sample[0], batch)
            optimizer_step(loss, self.w_opt, self.w_scaler, self.schedule, grad_clip)
            weighted = loss.detach().double() * count
            total = weighted if total is None else total + weighted
            seen += count
        assert total is not None  # of() checked that the half holds a batch
        return epoch_loss(total, seen, epoch)


def loss_reward(loss: torch.Tensor) -> float:
    """``exp(-loss)`` of a child's held-out minibatch (``reward=loss``): in (0, 1], higher is
    better, ENAS's language-model reward ``c / perplexity`` with c = 1."""
    return float(torch.exp(-loss.detach().float()))


def score_name(settings: SearchSettings, task_score: str) -> str:
    """The name the rewards' child score is logged under (``search_mean_child_<name>``)."""
    return "exp_neg_loss" if settings.reward == "loss" else task_score


@dataclass
class ControllerPhase:
    """One epoch's REINFORCE steps: each step's reward, child score and entropy per decision."""

    rewards: list[float]
    scores: list[float]
    entropies: list[float]
    baseline: float | None

    def metrics(self, score_name: str) -> dict[str, float]:
        """``search_mean_reward``, ``search_mean_child_<score_name>``, ``search_baseline``,
        ``search_controller_entropy`` (mean entropy per decision, nats)."""

        def mean(values: list[float]) -> float:
            return sum(values) / max(1, len(values))

        return {
            "search_mean_reward": mean(self.rewards),
            f"search_mean_child_{score_name}": mean(self.scores),
            "search_baseline": float(self.baseline) if self.baseline is not None else 0.0,
            "search_controller_entropy": mean(self.entropies),
        }


def train_controller(
    controller: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[Any],
    score: Callable[[torch.Tensor, Any], float],
    settings: SearchSettings,
    baseline: float | None,
    generator: torch.Generator,
    decisions: int,
) -> ControllerPhase:
    """ENAS's phase (b): ``controller_steps`` REINFORCE steps (:func:`reinforce_step`), each on
    one sampled architecture (a row of ``decisions`` indices) scored by ``score(row, batch)`` on
    the next of ``batches`` with the inherited weights."""
    controller.train()
    phase = ControllerPhase([], [], [], baseline)
    for _ in range(settings.controller_steps):
        batch = next(batches)
        sample, log_prob, entropy = controller(generator=generator)
        value = score(sample[0], batch)
        reward, phase.baseline = reinforce_step(
            controller, optimizer, log_prob, entropy, value, phase.baseline, settings
        )
        phase.rewards.append(reward)
        phase.scores.append(value)
        phase.entropies.append(float(entropy.detach().sum()) / decisions)
    controller.eval()
    return phase


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
    training = EnasTraining.of(net, controller, data, settings, seed, runtime)
    scoring = ScoringBatches.of(data, DERIVED_BN_IMAGES, seed)

    def accuracy(ops: tuple[str, ...], x: torch.Tensor, y: torch.Tensor) -> float:
        # Training-mode BatchNorm (the batch's statistics, as ENAS): no gradient.
        with torch.no_grad(), runtime.autocast():
            logits = net(x, path=ops).float()
        if settings.reward == "loss":
            return loss_reward(F.cross_entropy(logits, y))
        return float((logits.argmax(-1) == y).float().mean())

    def child_accuracy(row: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        x, y = batch
        return accuracy(to_ops(row), preprocess(runtime.to_device(x)), runtime.to_device(y))

    def held_out() -> tuple[torch.Tensor, torch.Tensor]:
        x, y = next(iter(loader(training.a_half, DERIVE_IMAGES, seed + 2, data)))
        return preprocess(runtime.to_device(x)), runtime.to_device(y)

    def path_loss(
        row: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, int]:
        x, y = preprocess(runtime.to_device(batch[0])), runtime.to_device(batch[1])
        net.train()
        with runtime.autocast():
            logits = net(x, path=to_ops(row))
        return F.cross_entropy(logits.float(), y), len(y)

    alphas: list[list[list[float]]] = []
    metrics: dict[str, float] = {}
    baseline: float | None = None
    reward_batches = training.reward_batches()
    start = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        # (a) the shared weights, one controller-sampled path per step
        train_loss = training.train_weights(
            controller, generator, settings.grad_clip, epoch, path_loss
        )
        # (b) the controller, by REINFORCE on held-out minibatches
        phase = train_controller(
            controller,
            training.c_opt,
            reward_batches,
            child_accuracy,
            settings,
            baseline,
            generator,
            len(EDGES),
        )
        baseline = phase.baseline
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
            # search_controller_entropy: per decision, nats (uniform: ln 5 = 1.609; 0: one cell)
            **phase.metrics(score_name(settings, "accuracy")),
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

"""The text classification trial: tokenize, build the config's transformer, train it, score it.

The tokenizer comes from ``nas_plugin.tasks.tokenizer`` (pretrained where available, else trained
on the training split and cached), the model from ``nas_plugin.models.transformer``. Texts are
truncated to ``model.max_length`` tokens and padded per batch to the longest text in it.

The trial trains and evaluates on ``train.device`` at ``train.precision`` (``Runtime``, see
``nas_plugin.hardware.device``; channels-last does not apply to a transformer), and logs a model
moved to the CPU, so that it loads and predicts on a machine without a GPU.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from sklearn.metrics import f1_score
from torch import nn
from transformers import PreTrainedTokenizerBase

from nas_plugin.hardware.cost import measure_configured_cost
from nas_plugin.hardware.device import Runtime, on_cpu
from nas_plugin.models.transformer import build_transformer, resolve_architecture
from nas_plugin.tasks.reporting import EpochLoop, TrialReporter, current_reporter
from nas_plugin.tasks.text_data import TextSplit, load_text_data
from nas_plugin.tasks.tokenizer import LoadedTokenizer, load_tokenizer
from nas_plugin.tasks.training import check_budget, make_optimizer, seed_everything, set_threads

EVAL_BATCH_SIZE = 256
INPUT_EXAMPLE_SIZE = 3
MIN_SEQ_LENGTH = 1


class EncodedSplit:
    """Token ids of one split (truncated, not padded) and its label ids."""

    def __init__(self, ids: list[list[int]], labels: np.ndarray) -> None:
        self.ids = ids
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.ids)

    def batches(
        self, batch_size: int, pad_id: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(input_ids, attention_mask, labels) batches, shuffled when a generator is given."""
        order = (
            torch.randperm(len(self), generator=generator)
            if generator is not None
            else torch.arange(len(self))
        )
        for start in range(0, len(self), batch_size):
            index = order[start : start + batch_size].tolist()
            rows = [self.ids[i] for i in index]
            width = max(len(row) for row in rows)
            input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, row in enumerate(rows):
                input_ids[i, : len(row)] = torch.as_tensor(row)
                mask[i, : len(row)] = 1
            yield input_ids, mask, self.labels[index]


class RandomTokenClassifier(nn.Module):
    """Adapter for ``measure_cost``, which feeds one float tensor of uniform values in [0, 1).

    It maps them to token ids of a full-length sequence (all positions attended), so the cost
    is that of classifying one text of ``seq_length`` tokens, and returns the logits.
    """

    def __init__(self, model: nn.Module, vocab_size: int) -> None:
        super().__init__()
        self.model = model
        self.vocab_size = vocab_size

    def forward(self, uniform: torch.Tensor) -> torch.Tensor:
        ids = (uniform * self.vocab_size).long().clamp_(0, self.vocab_size - 1)
        return self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def run_text_trial(cfg: DictConfig) -> dict[str, float]:
    """Train ``cfg.model`` (``kind: transformer``) on ``cfg.task`` and return scores and cost.

    Per epoch, ``train_loss``, ``val_loss``, ``val_accuracy`` and ``val_macro_f1`` are logged at
    step = epoch (1-based) through the current reporter (:mod:`nas_plugin.tasks.reporting`; in
    a sweep, the trial's MLflow run); no run is started here. With a recording reporter the
    resolved architecture (derived head count and FFN size included) is logged as ``arch.*``
    params and the tokenizer as ``tokenizer.*`` tags; with ``log_model`` too, the trained model
    and its tokenizer are logged through it (in a sweep:
    ``nas_plugin.tracking.text_model.log_text_model``: raw text in, label names out).

    Returns floats: ``val_accuracy``, ``val_loss``, ``val_macro_f1``, the same three for
    ``test_``, ``train_loss`` (mean over the last epoch), ``params``, ``flops``, ``latency_ms``,
    ``peak_memory_mb`` (one text of ``hardware.seq_length`` tokens, default ``model.max_length``,
    at batch 1; only ``params`` when ``hardware.measure`` is false), ``train_seconds`` and
    ``epochs`` (those trained). Each epoch's validation scores are reported to the sweep's
    pruner (``nas_plugin.pruning``): a pruned trial stops there and logs no model.

    Raises:
        FloatingPointError: the training loss became NaN or infinite.
        ValueError: a bad config value, named in the message.
        DeviceError: ``train.device`` or ``train.precision`` this machine cannot provide.
    """
    seed = int(cfg.seed)
    seed_everything(seed)
    train_cfg = cfg.train
    epochs = check_budget(train_cfg)
    if cfg.model.get("kind") != "transformer":
        raise ValueError(
            f"model.kind = {cfg.model.get('kind')!r}: the text task trains transformer encoders; "
            "select model=transformer"
        )
    arch = resolve_architecture(cfg.model)
    # Channels-last is a 4-D image layout: nothing to change in a transformer.
    runtime = dataclasses.replace(Runtime.from_config(train_cfg), channels_last=False)
    set_threads(train_cfg)

    data = load_text_data(cfg.task, float(train_cfg.get("train_fraction", 1.0)), seed)
    loaded = load_tokenizer(cfg.task.get("tokenizer") or {}, data.train.texts)
    tokenizer = loaded.tokenizer
    model = build_transformer(
        cfg.model,
        data.num_classes,
        len(tokenizer),
        pad_token_id=int(tokenizer.pad_token_id),
        labels=data.class_names,
    )
    runtime.prepare(model)  # built on the CPU (same seed, same weights), trained on the device
    splits = {
        name: encode_split(tokenizer, split, arch.max_length)
        for name, split in (("train", data.train), ("val", data.val), ("test", data.test))
    }

    results: dict[str, float] = {}
    hardware = cfg.get("hardware") or {}
    if hardware.get("measure", True):
        seq_length = int(hardware.get("seq_length") or arch.max_length)
        if not MIN_SEQ_LENGTH <= seq_length <= arch.max_length:
            raise ValueError(
                f"hardware.seq_length = {seq_length} is not allowed: expected {MIN_SEQ_LENGTH} to "
                f"model.max_length = {arch.max_length}"
            )
        with _frozen(model):
            cost = measure_configured_cost(
                RandomTokenClassifier(model, len(tokenizer)), (seq_length,), hardware
            )
        results.update(cost)
    else:
        results["params"] = float(sum(p.numel() for p in model.parameters()))

    reporter = current_reporter()
    if reporter.recording:
        reporter.log_params(arch.as_params())
        reporter.set_tags({**_tokenizer_tags(loaded), **runtime.describe()})

    pad_id = int(tokenizer.pad_token_id)
    loop = EpochLoop(epochs)
    train_loss, val, seconds = _train(
        model, splits, train_cfg, seed, pad_id, reporter, loop, runtime
    )
    test = evaluate_text(model, splits["test"], pad_id, runtime)
    results.update(
        val_accuracy=val["accuracy"],
        val_loss=val["loss"],
        val_macro_f1=val["macro_f1"],
        test_accuracy=test["accuracy"],
        test_loss=test["loss"],
        test_macro_f1=test["macro_f1"],
        train_loss=train_loss,
        train_seconds=seconds,
        epochs=float(loop.epochs_done),
    )

    # A pruned trial's model is not worth the upload: it is never the one registered.
    if cfg.get("log_model", False) and reporter.recording and not loop.pruned:
        example = data.val.texts[:INPUT_EXAMPLE_SIZE]
        with on_cpu(model):  # loads and predicts on a machine without the trial's GPU
            reporter.log_text_model(model, tokenizer, arch.max_length, example)
    return results


def encode_split(
    tokenizer: PreTrainedTokenizerBase, split: TextSplit, max_length: int
) -> EncodedSplit:
    encoded = tokenizer(split.texts, truncation=True, max_length=max_length)
    return EncodedSplit(encoded["input_ids"], split.labels)


def _train(
    model: nn.Module,
    splits: dict[str, EncodedSplit],
    train_cfg: DictConfig,
    seed: int,
    pad_id: int,
    reporter: TrialReporter,
    loop: EpochLoop,
    runtime: Runtime,
) -> tuple[float, dict[str, float], float]:
    """Train for the loop's epochs (fewer if pruned) on the runtime's device and precision;
    return (last epoch's train loss, last validation scores, seconds)."""
    epochs, batch_size = int(train_cfg.epochs), int(train_cfg.batch_size)
    train = splits["train"]
    steps_per_epoch = math.ceil(len(train) / batch_size)
    optimizer = make_optimizer(model, train_cfg)
    scheduler = warmup_cosine(
        optimizer, epochs * steps_per_epoch, float(train_cfg.get("warmup_fraction", 0.1))
    )
    clip = float(train_cfg.get("grad_clip", 1.0))
    generator = torch.Generator().manual_seed(seed)
    scaler = runtime.grad_scaler()  # enabled for fp16 only
    forward = runtime.compiled(model)  # the uncompiled module is the one logged

    start = time.perf_counter()
    for epoch in loop:
        model.train()
        # Summed on the device: no host sync per step beyond the finiteness check.
        total_loss, seen = torch.zeros((), device=runtime.device), 0
        for step, batch in enumerate(train.batches(batch_size, pad_id, generator)):
            input_ids, mask, labels = (runtime.to_device(t) for t in batch)
            with runtime.autocast():
                logits = forward(input_ids=input_ids, attention_mask=mask).logits
            loss = F.cross_entropy(logits.float(), labels)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss is {loss.item()} at epoch {epoch}, batch {step}: the model "
                    f"diverged; lower train.lr (now {train_cfg.lr}) or change the architecture"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if clip > 0:  # post-LN transformers trained from scratch spike without it
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total_loss += loss.detach() * len(labels)
            seen += len(labels)
        train_loss = total_loss.item() / seen
        val = evaluate_text(model, splits["val"], pad_id, runtime)
        metrics = {
            "train_loss": train_loss,
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            "val_macro_f1": val["macro_f1"],
        }
        reporter.log_metrics(metrics, step=epoch)
        loop.report(metrics)
    return train_loss, val, time.perf_counter() - start


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup_fraction`` of the steps, then cosine decay to 0."""
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(
            f"train.warmup_fraction = {warmup_fraction} is not allowed: expected 0 <= f < 1"
        )
    warmup = max(1, round(warmup_fraction * total_steps)) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def evaluate_text(
    model: nn.Module, split: EncodedSplit, pad_id: int, runtime: Runtime
) -> dict[str, float]:
    """Mean cross-entropy, accuracy and macro F1 of ``model`` in eval mode on ``split``, on
    the runtime's device and precision."""
    model.eval()
    total_loss = torch.zeros((), device=runtime.device)  # one host sync at the end
    predictions = []
    for batch in split.batches(EVAL_BATCH_SIZE, pad_id):
        input_ids, mask, labels = (runtime.to_device(t) for t in batch)
        with runtime.autocast():
            logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
        total_loss += F.cross_entropy(logits, labels, reduction="sum")
        predictions.append(logits.argmax(dim=1))
    loss = total_loss.item() / len(split)
    if not math.isfinite(loss):
        raise FloatingPointError(f"evaluation loss is {loss}: the trained model diverged")
    predicted = torch.cat(predictions).cpu().numpy()
    truth = split.labels.numpy()
    return {
        "loss": loss,
        "accuracy": float((predicted == truth).mean()),
        "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
    }


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Parameters without ``requires_grad`` inside the block.

    torch's ``FlopCounterMode`` hooks module inputs that require grad; a view of a parameter
    taken under ``no_grad`` (DeBERTa's relative position embeddings) requires grad but has no
    grad function, which makes the hook fail.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def _tokenizer_tags(loaded: LoadedTokenizer) -> dict[str, str]:
    return {
        "tokenizer.source": loaded.source,
        "tokenizer.key": loaded.key,
        "tokenizer.vocab_size": str(len(loaded.tokenizer)),
    }

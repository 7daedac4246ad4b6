"""The vision task's model factory for zero-cost proxies (``estimator=zero_cost``).

:func:`proxy_inputs` builds the network a vision trial (:mod:`nas_plugin.tasks.vision`) would
train, with the same initial weights, and draws minibatches of raw training images for it.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from nas_plugin.models import build_model
from nas_plugin.tasks.training import seed_everything, set_threads
from nas_plugin.tasks.vision import Preprocess, channel_stats
from nas_plugin.tasks.vision_data import cached_vision_data, task_key


def proxy_inputs(
    cfg: DictConfig, batch_size: int, batches: int, seed: int
) -> tuple[nn.Module, list[torch.Tensor], list[torch.Tensor]]:
    """(model, image batches, label batches) for the trial config ``cfg``.

    The model is ``Preprocess -> network``, initialised from ``cfg.seed`` exactly as
    ``run_vision_trial`` initialises it, so it takes raw images in [0, 1]. The ``batches``
    batches of ``batch_size`` images are drawn without replacement from the trial's training
    split by ``seed``. Uses ``train.num_threads`` torch threads, as the trial does.
    """
    if batch_size < 1 or batches < 1:
        raise ValueError(f"batch_size = {batch_size}, batches = {batches}: expected >= 1 each")
    train_cfg = cfg.get("train") or {}
    set_threads(train_cfg)
    trial_seed = int(cfg.seed)
    data = cached_vision_data(
        task_key(cfg.task), float(train_cfg.get("train_fraction", 1.0)), trial_seed
    )
    mean, std = channel_stats(data.train)
    # The trial seeds, loads its data (which draws nothing from torch's generator), then builds:
    # seeding right before building gives the trial's initial weights.
    seed_everything(trial_seed)
    net = build_model(cfg.model, data.num_classes, data.in_chans)
    model = nn.Sequential(Preprocess(int(cfg.task.resolution), mean, std), net)

    wanted = batch_size * batches
    if len(data.train) < wanted:
        raise ValueError(
            f"the training split has {len(data.train)} images, fewer than batch_size x batches "
            f"= {batch_size} x {batches}: lower them"
        )
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
    chosen = order[:wanted].tolist()
    images = torch.stack([data.train[i][0] for i in chosen])
    labels = data.train.labels[chosen]
    return model, list(images.split(batch_size)), list(labels.split(batch_size))

"""The SpineNet weight-sharing supernet for detection (``estimator=supernet`` on
``model=spinenet``), trained by single-path one-shot sampling as DetNAS (Chen et al., NeurIPS
2019) trains its detection backbone supernet.

:class:`SpineNetSupernet` is a :class:`~nas_plugin.models.spinenet.SpineNet` that holds a module
for every choice a block can make: its block for each (level, type), a resampling for each
(input block, that block's level, this block's level), a pyramid lateral for each (output level,
source block, its level). :meth:`~SpineNetSupernet.set_arch` picks one architecture (blocks and
pyramid fusion); the forward is then SpineNet's own, on the picked modules, so a candidate
extracted with :func:`extract` computes exactly what the supernet computed for it. The FCOS head
and the stem are shared by every architecture.

:func:`train_spos` trains the supernet (wrapped in the task's
:class:`~nas_plugin.tasks.detection.DetectionModel`) with FCOS's losses, a uniformly sampled
architecture of the sweep's space per step (the searched keys' values; the others as the app's
model config has them), AdamW with a cosine schedule. A candidate's BatchNorm statistics are
re-estimated after extraction (the supernet's are shared by every path).
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from nas_plugin.hardware.device import Runtime
from nas_plugin.models.spinenet import (
    BLOCK_TYPES,
    FUSIONS,
    LEVELS,
    MAX_INPUT_OFFSET,
    OUTPUT_LEVELS,
    Resample,
    SpineNet,
    check_model_config,
    computing_blocks,
    detector_on,
    make_block,
    make_smooth,
    make_stem,
    output_blocks,
    resolve_input,
)
from nas_plugin.tasks.detection import DetectionModel, shift_labels
from nas_plugin.tasks.training import (
    check_finite_loss,
    cosine_optimizer,
    optimizer_step,
    training_batches,
)

BlockSpec = tuple[int, str, int, int]  # level, type, input_1, input_2


class SpineNetSupernet(SpineNet):
    """Every block, resampling and lateral an architecture of ``num_blocks`` blocks can use.
    Built with the app's model config's sizes (``channels``, ``pyramid.channels``); its first
    architecture is ``blocks`` / ``fusion``."""

    def __init__(
        self,
        blocks: Sequence[BlockSpec],
        in_chans: int = 3,
        channels: int = 16,
        pyramid_channels: int = 32,
        fusion: str = "top_down",
    ) -> None:
        nn.Module.__init__(self)  # SpineNet's own modules are built below, for every choice
        self.in_chans, self.out_channels = in_chans, pyramid_channels
        self.num_blocks = len(blocks)
        self.stem = make_stem(in_chans, channels)

        def width(level: int) -> int:
            return channels * 2 ** (level - LEVELS[0])

        def levels_of(j: int) -> tuple[int, ...]:
            return (LEVELS[0],) if j == 0 else LEVELS  # block 0 is the stem, at 1/4

        self.choice_blocks = nn.ModuleDict(
            {
                f"{k}_{level}_{kind}": make_block(kind, width(level))
                for k in range(1, self.num_blocks + 1)
                for level in LEVELS
                for kind in BLOCK_TYPES
            }
        )
        self.choice_resamples = nn.ModuleDict()
        for k in range(1, self.num_blocks + 1):
            for j in sorted({resolve_input(k, o) for o in range(1, MAX_INPUT_OFFSET + 1)}):
                for level_in in levels_of(j):
                    for level in LEVELS:
                        self.choice_resamples[f"{k}_{j}_{level_in}_{level}"] = Resample(
                            level_in, width(level_in), level, width(level)
                        )
        self.choice_laterals = nn.ModuleDict(
            {
                f"{o}_{j}_{level_in}": Resample(level_in, width(level_in), level, pyramid_channels)
                for o, level in enumerate(OUTPUT_LEVELS)
                for j in range(self.num_blocks + 1)
                for level_in in levels_of(j)
            }
        )
        self.smooth = make_smooth(pyramid_channels)
        # Searched key (model.blocks.block_<k>.<field>, model.pyramid.fusion) -> its gate, 1 in
        # value with a gradient to the key's logits; set by oneshot/spinenet_search.py only.
        self.gates: dict[str, torch.Tensor] = {}
        # DARTS's continuous relaxation (oneshot/spinenet_darts.py): while set, the forward
        # mixes every choice by its weights instead of computing the picked architecture.
        self.relaxation: Callable[[SpineNetSupernet, torch.Tensor], Any] | None = None
        self.set_arch(blocks, fusion)

    def forward(self, images: torch.Tensor) -> Any:
        if self.relaxation is not None:
            return self.relaxation(self, images)
        return super().forward(images)

    def set_arch(self, blocks: Sequence[BlockSpec], fusion: str) -> None:
        """Compute architecture ``blocks`` (``num_blocks`` of (level, type, input_1,
        input_2)) with pyramid ``fusion`` from now on."""
        if len(blocks) != self.num_blocks or fusion not in FUSIONS:
            raise ValueError(
                f"an architecture of this supernet has {self.num_blocks} blocks and a fusion in "
                f"{FUSIONS}; got {len(blocks)} blocks, fusion {fusion!r}"
            )
        self.blocks_spec, self.fusion = tuple(tuple(b) for b in blocks), fusion
        self.levels = [LEVELS[0]] + [level for level, *_ in blocks]
        self.inputs = [
            tuple(dict.fromkeys((resolve_input(k, first), resolve_input(k, second))))
            for k, (_, _, first, second) in enumerate(blocks, start=1)
        ]
        self.outputs = output_blocks(self.levels)
        self.computing = computing_blocks(self.inputs, self.outputs)

    def _gated(self, x: torch.Tensor, keys: Sequence[str]) -> torch.Tensor:
        for key in keys:
            if key in self.gates:
                x = x * self.gates[key]
        return x

    def gate_input(self, k: int, i: int, x: torch.Tensor) -> torch.Tensor:
        if not self.gates:
            return x
        j = self.inputs[k - 1][i]  # two equal inputs feed once: both fields gate it
        _, _, first, second = self.blocks_spec[k - 1]
        pairs = (("input_1", first), ("input_2", second))
        fields = [f for f, o in pairs if resolve_input(k, o) == j]
        return self._gated(x, [f"model.blocks.block_{k}.{f}" for f in fields])

    def gate_block(self, k: int, x: torch.Tensor) -> torch.Tensor:
        return self._gated(x, [f"model.blocks.block_{k}.level", f"model.blocks.block_{k}.type"])

    def gate_pyramid(self, x: torch.Tensor) -> torch.Tensor:
        return self._gated(x, ["model.pyramid.fusion"])

    def input_resample(self, k: int, i: int) -> nn.Module:
        j = self.inputs[k - 1][i]
        return self.choice_resamples[f"{k}_{j}_{self.levels[j]}_{self.levels[k]}"]

    def block(self, k: int) -> nn.Module:
        level, kind, _, _ = self.blocks_spec[k - 1]
        return self.choice_blocks[f"{k}_{level}_{kind}"]

    def lateral(self, o: int) -> nn.Module:
        j = self.outputs[o]
        return self.choice_laterals[f"{o}_{j}_{self.levels[j]}"]


def build_supernet(model_cfg: Mapping[str, Any], num_classes: int, in_chans: int) -> nn.Module:
    """torchvision's FCOS on a :class:`SpineNetSupernet` sized by ``model_cfg`` (the app's
    model config; its blocks and fusion are the first architecture)."""
    args = check_model_config(model_cfg)
    backbone = SpineNetSupernet(
        args["blocks"], in_chans, args["channels"], args["pyramid_channels"], args["fusion"]
    )
    return detector_on(backbone, num_classes, args)


def extract(supernet: DetectionModel, model_cfg: Mapping[str, Any]) -> nn.Module:
    """The stand-alone FCOS detector of the architecture ``model_cfg`` describes, with the
    supernet's weights (BatchNorm statistics included): what ``build_model(model_cfg)`` builds,
    holding the modules the supernet computes this architecture with."""
    args = check_model_config(model_cfg)
    shared: SpineNetSupernet = supernet.detector.backbone
    shared.set_arch(args["blocks"], args["fusion"])
    backbone = SpineNet(
        args["blocks"], shared.in_chans, args["channels"], args["pyramid_channels"], args["fusion"]
    )
    backbone.stem.load_state_dict(shared.stem.state_dict())
    backbone.smooth.load_state_dict(shared.smooth.state_dict())
    for k, sources in enumerate(backbone.inputs, start=1):
        if k not in backbone.computing:
            continue  # not built in the stand-alone network
        backbone.block(k).load_state_dict(shared.block(k).state_dict())
        for i in range(len(sources)):
            backbone.input_resample(k, i).load_state_dict(shared.input_resample(k, i).state_dict())
    for o in range(len(OUTPUT_LEVELS)):
        backbone.lateral(o).load_state_dict(shared.lateral(o).state_dict())
    detector = detector_on(backbone, supernet.detector.head.classification_head.num_classes, args)
    detector.head.load_state_dict(supernet.detector.head.state_dict())
    return detector


def score_candidate(
    supernet: DetectionModel,
    model_cfg: Mapping[str, Any],
    data: Any,
    bn_images: int,
    seed: int,
    runtime: Runtime,
    *,
    per_class: bool = True,
) -> tuple[DetectionModel, dict[str, float]]:
    """The architecture ``model_cfg`` describes, extracted with the supernet's weights
    (:func:`extract`) on ``runtime``'s device, its BatchNorm statistics re-estimated on
    ``bn_images`` training images; and its val scores (``map_50``, ``map``, ...).

    Raises:
        ValueError: the architecture is not one of the supernet's."""
    from nas_plugin.tasks.detection import (
        EVAL_BATCH_SIZE,
        PyramidFeatures,
        evaluate,
        recalibration_loader,
    )
    from nas_plugin.tasks.vision import recalibrate_batchnorm

    detector = extract(supernet, model_cfg)
    transform = supernet.detector.transform
    mean, std = torch.tensor(transform.image_mean), torch.tensor(transform.image_std)
    model = runtime.prepare(DetectionModel(detector, int(transform.min_size[0]), mean, std))
    batches = recalibration_loader(data, bn_images, seed)
    recalibrate_batchnorm(PyramidFeatures(model), batches, runtime=runtime)
    val = evaluate(
        model, data.loader(data.val, EVAL_BATCH_SIZE), data, runtime, per_class=per_class
    )
    return model, val


def with_values(base: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A plain copy of the model config ``base`` (the app's) with ``values`` (keys
    ``model.<path>``, as the sweep's space names them) set."""
    # Plain dicts, not OmegaConf: this runs once per training step.
    arch = copy.deepcopy(OmegaConf.to_container(base) if OmegaConf.is_config(base) else dict(base))
    for key, value in values.items():
        *parents, leaf = key.removeprefix("model.").split(".")
        node = arch
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return arch


def sample_arch(
    rng: random.Random, base: Mapping[str, Any], choices: Mapping[str, Sequence[Any]]
) -> dict[str, Any]:
    """A model config: ``base`` (the app's) with every searched key of ``choices`` (the sweep's
    space: ``model.blocks.block_<k>.<field>``, ``model.pyramid.fusion``) drawn uniformly."""
    return with_values(base, {key: rng.choice(list(choices[key])) for key in sorted(choices)})


def train_spos(
    supernet: DetectionModel,
    data: Any,
    base: Mapping[str, Any],
    choices: Mapping[str, Sequence[Any]],
    settings: Mapping[str, Any],
    seed: int,
    runtime: Runtime,
) -> dict[str, float]:
    """Train ``supernet`` in place (``settings``: ``epochs``, ``batch_size``, ``lr``,
    ``weight_decay``), one architecture drawn per step (:func:`sample_arch`, seeded). Returns
    ``supernet_train_loss`` (last epoch's mean) and ``supernet_train_seconds``."""
    backbone: SpineNetSupernet = supernet.detector.backbone
    rng = random.Random(seed)
    epochs = int(settings["epochs"])
    loader = training_batches(data, int(settings["batch_size"]), seed)
    train_cfg = OmegaConf.create(
        {"optimizer": "adamw", "lr": settings["lr"], "weight_decay": settings["weight_decay"]}
    )
    optimizer, scheduler = cosine_optimizer(supernet, train_cfg, epochs * len(loader))
    scaler = runtime.grad_scaler()
    start, train_loss = time.perf_counter(), float("nan")
    for epoch in range(1, epochs + 1):
        supernet.train()
        total, seen = torch.zeros((), device=runtime.device), 0
        for images, targets in loader:
            args = check_model_config(sample_arch(rng, base, choices))
            backbone.set_arch(args["blocks"], args["fusion"])
            images = runtime.to_device(images)
            targets = [{k: runtime.to_device(v) for k, v in t.items()} for t in targets]
            with runtime.autocast():
                loss = sum(supernet.detector(list(images), shift_labels(targets)).values())
            optimizer_step(loss, optimizer, scaler, scheduler)
            total += loss.detach().float() * len(images)
            seen += len(images)
        train_loss = total.item() / seen
        check_finite_loss(train_loss, epoch, train_cfg)
    runtime.synchronize()
    return {
        "supernet_train_loss": train_loss,
        "supernet_train_seconds": time.perf_counter() - start,
    }

"""HAT / AutoTinyBERT-style elastic transformer supernet over the project's transformer space.

The supernet is ONE ``transformers`` BERT classifier (``BertForSequenceClassification``, built
by :func:`~nas_plugin.models.transformer.build_transformer`) of the largest sub-transformer:
the most layers, the widest hidden size and the widest FFN of the space. A sub-transformer
(``num_layers``, ``hidden_size``, heads via ``head_dim`` or ``num_heads``, FFN via
``ffn_ratio`` or ``intermediate_size``) uses

- the first ``num_layers`` layers;
- the first ``hidden_size`` columns of the embeddings and the first rows/columns of every
  linear weight, LayerNorm and the classifier (``weight[:out, :in]``);
- the first heads: Q/K/V keep their first ``hidden_size`` rows, which BERT splits into
  ``num_heads`` heads of ``hidden_size / num_heads``;
- the first ``intermediate_size`` FFN units.

The forward of a sub-transformer is BERT's own forward (``torch.func.functional_call`` on a
BERT skeleton of the sub-transformer's config with the supernet's sliced weights as its
parameters), so gradients flow into the shared weights and the math is exactly that of the
extracted model (:meth:`ElasticTransformer.extract`: a plain BERT with copied slices).

Training is sandwich sampling (:func:`train_sandwich`, BigNAS/HAT): every step runs the
largest, the smallest and ``random_subnets`` random sub-transformers and sums their gradients;
with ``distill`` > 0 the smaller ones also learn the largest one's logits (KL, in-place
distillation, the teacher's logits detached).

Only the BERT family is elastic here (its Q/K/V width equals the hidden size, so every
sub-transformer is a valid BERT config); every other model key is fixed by the app's config.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from nas_plugin.hardware.device import Runtime
from nas_plugin.models.transformer import Architecture, build_transformer, resolve_architecture
from nas_plugin.space import Categorical, Encoding, SearchSpace

LAYERS, HIDDEN = "model.num_layers", "model.hidden_size"
HEAD_KEYS = ("model.head_dim", "model.num_heads")
FFN_KEYS = ("model.ffn_ratio", "model.intermediate_size")
ELASTIC_KEYS = (LAYERS, HIDDEN, *HEAD_KEYS, *FFN_KEYS)
SUPERNET_FAMILY = "bert"


class ElasticTransformerError(ValueError):
    """A space or setting the elastic transformer cannot share weights over (names the key)."""


class ElasticTransformerSpace:
    """The elastic choices (``model.*`` key -> values) over the app's fixed model config."""

    def __init__(self, base: Mapping[str, Any], choices: Mapping[str, Sequence[Any]]) -> None:
        self.base = _plain(base)
        if self.base.get("model_type") != SUPERNET_FAMILY:
            raise ElasticTransformerError(
                f"model.model_type = {self.base.get('model_type')!r}: the elastic transformer "
                f"supernet shares weights over BERT blocks; set model.model_type={SUPERNET_FAMILY}"
            )
        unknown = sorted(set(choices) - set(ELASTIC_KEYS))
        if unknown:
            raise ElasticTransformerError(
                f"the space searches {', '.join(unknown)}: the elastic transformer supernet "
                f"shares weights over {', '.join(ELASTIC_KEYS)} only (fix the others in the "
                "app's model config, e.g. with hydra/sweeper/search_space=hat)"
            )
        for group in (HEAD_KEYS, FFN_KEYS):
            if set(group) <= set(choices):
                raise ElasticTransformerError(
                    f"the space searches both {group[0]} and {group[1]}: search only one"
                )
        self.choices: dict[str, tuple[Any, ...]] = {}
        for key in ELASTIC_KEYS:
            if key in choices:
                values = tuple(_plain(v) for v in choices[key])
                if not values or any(not _is_number(v) for v in values):
                    raise ElasticTransformerError(
                        f"{key} = {list(values)!r} is not allowed: expected a non-empty list of "
                        "numbers (a finite choice the supernet can share)"
                    )
                self.choices[key] = tuple(sorted(set(values)))
        self.head_key = next((k for k in HEAD_KEYS if k in self.choices), None)
        self.ffn_key = next((k for k in FFN_KEYS if k in self.choices), None)
        # Every sub-transformer must be a valid model (e.g. head_dim divides hidden_size).
        self.archs = [resolve_architecture(self.model_config(v)) for v in self.all_values()]
        self.largest_arch = Architecture(
            **{
                **vars(self.archs[0]),
                "num_layers": max(a.num_layers for a in self.archs),
                "hidden_size": max(a.hidden_size for a in self.archs),
                "intermediate_size": max(a.intermediate_size for a in self.archs),
                "num_heads": max(
                    a.num_heads
                    for a in self.archs
                    if a.hidden_size == max(b.hidden_size for b in self.archs)
                ),
            }
        )

    @property
    def keys(self) -> list[str]:
        return list(self.choices)

    def all_values(self) -> list[dict[str, Any]]:
        keys = self.keys
        return [
            dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*self.choices.values())
        ]

    def search_space(self) -> SearchSpace:
        return SearchSpace([Categorical(k, tuple(v)) for k, v in self.choices.items()])

    def largest(self) -> dict[str, Any]:
        """Most layers, widest hidden and FFN, most heads (the smallest head size)."""
        return {k: self._pick(k, max) for k in self.keys}

    def smallest(self) -> dict[str, Any]:
        return {k: self._pick(k, min) for k in self.keys}

    def _pick(self, key: str, pick: Callable[..., Any]) -> Any:
        values = self.choices[key]
        # More heads = smaller head_dim: the "largest" head choice is the smallest head_dim.
        flip = {max: min, min: max}[pick] if key == "model.head_dim" else pick
        return flip(values)

    def sample(self, rng: random.Random) -> dict[str, Any]:
        return {k: rng.choice(self.choices[k]) for k in self.keys}

    def values(self, arch: Mapping[str, Any] | Encoding) -> dict[str, Any]:
        """``arch`` (values by key, or an encoding of :meth:`search_space`) checked."""
        given = dict(arch)
        out = {}
        for key in self.keys:
            value = _plain(given.get(key, None))
            if value not in self.choices[key]:
                raise ElasticTransformerError(
                    f"{key} = {value!r} is not in the supernet: expected one of "
                    f"{list(self.choices[key])}"
                )
            out[key] = value
        extra = sorted(set(given) - set(self.keys))
        if extra:
            raise ElasticTransformerError(f"{', '.join(extra)}: not elastic in this supernet")
        return out

    def model_config(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The app's model config with ``values`` applied (a plain ``kind: transformer`` cfg)."""
        cfg = dict(self.base)
        for key, value in values.items():
            cfg[key.split(".", 1)[1]] = value
        # Exactly one of each pair is set: the searched one wins over the base's.
        for key, group in ((self.head_key, HEAD_KEYS), (self.ffn_key, FFN_KEYS)):
            if key is not None:
                for other in group:
                    if other != key:
                        cfg[other.split(".", 1)[1]] = None
        return cfg

    def arch_of(self, values: Mapping[str, Any]) -> Architecture:
        return resolve_architecture(self.model_config(values))

    def supernet_config(self) -> dict[str, Any]:
        """The model config of the supernet's BERT: the largest shapes of the space."""
        a = self.largest_arch
        return {
            **self.base,
            "num_layers": a.num_layers,
            "hidden_size": a.hidden_size,
            "head_dim": None,
            "num_heads": a.num_heads,
            "ffn_ratio": None,
            "intermediate_size": a.intermediate_size,
        }


class ElasticTransformer(nn.Module):
    """The shared weights (one BERT classifier of the largest shapes) and sliced forwards."""

    def __init__(
        self,
        space: ElasticTransformerSpace,
        num_classes: int,
        vocab_size: int,
        pad_token_id: int = 0,
        labels: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.space = space
        self.build_args = (
            num_classes,
            vocab_size,
            pad_token_id,
            None if labels is None else list(labels),
        )
        self.model = self._build(space.supernet_config())
        self.active = space.largest()
        # Not submodules: skeletons hold no shared state (their own weights are never used).
        self._skeletons: dict[tuple, nn.Module] = {}

    def _build(self, model_cfg: Mapping[str, Any]) -> nn.Module:
        num_classes, vocab, pad, labels = self.build_args
        return build_transformer(model_cfg, num_classes, vocab, pad_token_id=pad, labels=labels)

    def set_active(self, arch: Mapping[str, Any] | Encoding) -> None:
        self.active = self.space.values(arch)

    def skeleton(self, values: Mapping[str, Any]) -> nn.Module:
        key = tuple(sorted(values.items()))
        if key not in self._skeletons:
            with torch.random.fork_rng():  # building must not move the training's RNG
                net = self._build(self.space.model_config(values))
            # Emptied, on no device: functional_call replaces every parameter and buffer
            # (sliced_state), so a cached skeleton costs no (GPU) memory.
            self._skeletons[key] = net.to("meta")
        return self._skeletons[key]

    def sliced_state(self, values: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The sub-transformer's parameters and buffers as views of the shared ones: for every
        tensor of the sub-transformer's BERT, the first entries along each dimension of the
        supernet's tensor of the same name (layer i is the supernet's layer i)."""
        skeleton = self.skeleton(values)
        shared = dict(self.model.named_parameters())
        shared.update(dict(self.model.named_buffers()))
        state = {}
        for name, tensor in itertools.chain(skeleton.named_parameters(), skeleton.named_buffers()):
            state[name] = shared[name][tuple(slice(0, n) for n in tensor.shape)]
        return state

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        arch: Mapping[str, Any] | None = None,
    ) -> Any:
        """BERT's forward of the ``arch`` (default: the active) sub-transformer on the shared
        weights; returns its ``SequenceClassifierOutput``."""
        values = self.active if arch is None else self.space.values(arch)
        skeleton = self.skeleton(values)
        skeleton.train(self.training)
        return functional_call(
            skeleton,
            self.sliced_state(values),
            kwargs={"input_ids": input_ids, "attention_mask": attention_mask},
            tie_weights=False,
        )

    @torch.no_grad()
    def extract(self, arch: Mapping[str, Any] | Encoding) -> nn.Module:
        """A standalone BERT classifier of ``arch`` with copies of the sliced weights."""
        values = self.space.values(arch)
        with torch.random.fork_rng():
            net = self._build(self.space.model_config(values))
        sliced = self.sliced_state(values)
        # Persistent tensors only (BERT's position/token type id buffers are not saved).
        net.load_state_dict({k: sliced[k].detach().clone().cpu() for k in net.state_dict()})
        return net.to(next(self.model.parameters()).device).eval()


class SubTransformer(nn.Module):
    """One sub-transformer of a supernet as a module (``model(input_ids=, attention_mask=)``),
    for scoring without extracting."""

    def __init__(self, supernet: ElasticTransformer, values: Mapping[str, Any]) -> None:
        super().__init__()
        self.supernet = supernet
        self.values = dict(values)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Any:
        self.supernet.train(self.training)
        return self.supernet(input_ids, attention_mask, arch=self.values)


@dataclass(frozen=True)
class SandwichSettings:
    epochs: int = 6
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    random_subnets: int = 2
    distill: float = 0.0
    grad_clip: float = 1.0
    warmup_fraction: float = 0.1

    @classmethod
    def of(cls, cfg: Mapping[str, Any], prefix: str = "train") -> SandwichSettings:
        """From a config mapping, every value checked (errors name ``prefix.key``)."""
        known = set(cls.__dataclass_fields__)
        values = {k: cfg[k] for k in known if k in cfg and cfg[k] is not None}
        for key in ("epochs", "batch_size"):
            _check(values, key, prefix, int, 1)
        _check(values, "random_subnets", prefix, int, 0)
        for key in ("lr",):
            _check(values, key, prefix, float, None, positive=True)
        for key in ("weight_decay", "distill", "grad_clip"):
            _check(values, key, prefix, float, 0.0)
        wf = values.get("warmup_fraction", cls.warmup_fraction)
        if not isinstance(wf, int | float) or isinstance(wf, bool) or not 0 <= wf < 1:
            raise ElasticTransformerError(
                f"{prefix}.warmup_fraction = {wf!r} is not allowed: expected 0 <= f < 1"
            )
        return cls(**values)


def train_sandwich(
    supernet: ElasticTransformer,
    train: Any,
    pad_id: int,
    settings: SandwichSettings,
    seed: int,
    runtime: Runtime | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> dict[str, float]:
    """Sandwich-train ``supernet`` in place on ``train`` (an ``EncodedSplit``): per step the
    largest, the smallest and ``random_subnets`` random sub-transformers, gradients summed;
    ``distill`` weighs a KL from the largest one's (detached) logits for the others. Returns
    ``supernet_train_loss`` (the largest's mean loss of the last epoch) and
    ``supernet_train_seconds``."""
    from nas_plugin.tasks.text import warmup_cosine

    runtime = runtime or Runtime(torch.device("cpu"))
    scaler = runtime.grad_scaler()  # enabled for fp16 only
    space = supernet.space
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(
        supernet.model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    steps = settings.epochs * math.ceil(len(train) / settings.batch_size)
    scheduler = warmup_cosine(optimizer, steps, settings.warmup_fraction)
    start = time.perf_counter()
    supernet.train()
    loss_largest = 0.0
    for epoch in range(settings.epochs):
        total, seen = torch.zeros((), device=runtime.device), 0
        for input_ids, mask, labels in train.batches(settings.batch_size, pad_id, generator):
            input_ids, mask, labels = (runtime.to_device(t) for t in (input_ids, mask, labels))
            archs = [space.largest(), space.smallest()]
            archs += [space.sample(rng) for _ in range(settings.random_subnets)]
            optimizer.zero_grad(set_to_none=True)
            teacher = None
            for index, arch in enumerate(archs):
                with runtime.autocast():
                    logits = supernet(input_ids, mask, arch=arch).logits.float()
                loss = F.cross_entropy(logits, labels)
                if index == 0:
                    total += loss.detach() * len(labels)
                    seen += len(labels)
                    teacher = logits.detach()
                elif settings.distill > 0:
                    kl = F.kl_div(
                        F.log_softmax(logits, dim=1),
                        F.log_softmax(teacher, dim=1),
                        log_target=True,
                        reduction="batchmean",
                    )
                    loss = loss + settings.distill * kl
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"supernet loss is {loss.item()} at epoch {epoch} for {arch}: lower the "
                        f"learning rate (now {settings.lr})"
                    )
                scaler.scale(loss).backward()  # summed over the sandwich's sub-transformers
            if settings.grad_clip > 0:
                scaler.unscale_(optimizer)  # clip the true gradients
                nn.utils.clip_grad_norm_(supernet.model.parameters(), settings.grad_clip)
            scaler.step(optimizer)  # skipped (and the scale lowered) on inf/NaN gradients
            scaler.update()
            scheduler.step()
        loss_largest = total.item() / max(1, seen)
        if on_epoch is not None:
            on_epoch(epoch, loss_largest)
    supernet.eval()
    return {
        "supernet_train_loss": loss_largest,
        "supernet_train_seconds": time.perf_counter() - start,
    }


def arch_params(values: Mapping[str, Any], arch: Architecture) -> dict[str, Any]:
    """What a sub-transformer is, flat, for MLflow and the registry's tags."""
    return {**values, **arch.as_params()}


def _check(
    values: dict[str, Any],
    key: str,
    prefix: str,
    kind: type,
    minimum: float | None,
    positive: bool = False,
) -> None:
    if key not in values:
        return
    value = values[key]
    ok = isinstance(value, int) if kind is int else isinstance(value, int | float)
    ok = ok and not isinstance(value, bool)
    ok = ok and (minimum is None or value >= minimum) and (not positive or value > 0)
    if not ok:
        bound = "> 0" if positive else f">= {minimum}"
        raise ElasticTransformerError(
            f"{prefix}.{key} = {value!r} is not allowed: expected "
            f"{'an integer' if kind is int else 'a number'} {bound}"
        )
    values[key] = kind(value)


def _plain(value: Any) -> Any:
    from omegaconf import OmegaConf

    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)

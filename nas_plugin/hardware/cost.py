"""Hardware cost of a built model: size, compute, CPU latency and peak inference memory."""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

MIB = 2**20


def measure_configured_cost(
    model: nn.Module, input_shape: tuple[int, ...], hardware: Mapping[str, Any]
) -> dict[str, float]:
    """:func:`measure_cost` with the repeats of an app's ``hardware`` config section
    (``latency_repeats``, default 30; ``latency_warmup``, default 5)."""
    return measure_cost(
        model,
        input_shape,
        latency_repeats=int(hardware.get("latency_repeats", 30)),
        warmup=int(hardware.get("latency_warmup", 5)),
    )


def measure_cost(
    model: nn.Module,
    input_shape: tuple[int, ...],
    latency_repeats: int = 30,
    warmup: int = 5,
) -> dict[str, float]:
    """Measure what running ``model`` on one input of ``input_shape`` costs on this CPU.

    ``input_shape`` is the shape of ONE input without the batch dimension, e.g. ``(1, 8, 8)``;
    every measurement uses a batch of 1, in eval mode, under ``torch.no_grad()``, with random
    values in [0, 1]. The model must be on the CPU. Its train/eval state is restored afterwards.

    Returns:
        ``params``: number of parameters (trainable or not; shared ones counted once).
        ``flops``: floating-point operations of one forward as counted by torch's
            ``FlopCounterMode``: 2 per multiply-accumulate, for matmuls and convolutions only
            (element-wise ops, pooling and normalisation are not counted).
        ``latency_ms``: median wall time of one forward over ``latency_repeats`` runs after
            ``warmup`` untimed ones, using the current ``torch.get_num_threads()`` threads.
        ``peak_memory_mb``: bytes of parameters and buffers plus the peak bytes of tensors
            alive at the same time during one forward (the input, every op's outputs until
            they are freed), in MiB (2**20 bytes). It is measured by tracking the storages
            that aten ops return; scratch space inside kernels and allocator overhead are not
            included, so it is a lower bound on the process's extra resident memory.
    """
    if latency_repeats < 1 or warmup < 0:
        raise ValueError(
            f"latency_repeats = {latency_repeats} and warmup = {warmup}: expected "
            "latency_repeats >= 1 and warmup >= 0"
        )
    devices = {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()}
    if devices - {"cpu"}:
        raise ValueError(f"measure_cost measures CPU cost: move the model to the CPU ({devices})")

    example = torch.rand((1, *input_shape), generator=torch.Generator().manual_seed(0))
    with _eval_mode(model), torch.no_grad():
        flops = _count_flops(model, example)
        activation_bytes = _peak_activation_bytes(model, example)
        latency_ms = _median_latency_ms(model, example, latency_repeats, warmup)

    state_bytes = sum(t.numel() * t.element_size() for t in _params_and_buffers(model))
    return {
        "params": float(sum(p.numel() for p in model.parameters())),
        "flops": float(flops),
        "latency_ms": latency_ms,
        "peak_memory_mb": (state_bytes + activation_bytes) / MIB,
    }


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    # Submodules may be in mixed states (e.g. frozen BatchNorm): restore each one's own flag.
    states = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in states:
            module.training = training


def _params_and_buffers(model: nn.Module) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers()]


def _count_flops(model: nn.Module, example: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        model(example)
    return counter.get_total_flops()


def _median_latency_ms(model: nn.Module, example: torch.Tensor, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        model(example)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(example)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings) * 1000.0


def _peak_activation_bytes(model: nn.Module, example: torch.Tensor) -> int:
    model(example)  # a first call may allocate lazily-created state; measure a steady one
    tracker = _LiveTensorTracker(exclude=_params_and_buffers(model))
    tracker.track(example)
    with tracker:
        model(example)
    return tracker.peak_bytes


class _LiveTensorTracker(TorchDispatchMode):
    """Sums the bytes of storages that aten ops return, from allocation until freed.

    A storage counts once however many tensors (views, in-place results) share it, and stops
    counting when the last of them is garbage-collected. Storages of ``exclude`` (the model's
    parameters and buffers, whose views such as a transposed weight are op outputs) never count.
    """

    def __init__(self, exclude: list[torch.Tensor]) -> None:
        super().__init__()
        self._excluded = {_storage_key(t) for t in exclude}
        self._tensors_of: dict[int, int] = {}  # storage key -> live tracked tensors using it
        self._bytes_of: dict[int, int] = {}
        self._tracked_ids: set[int] = set()
        self.live_bytes = 0
        self.peak_bytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in _tensors_in(out):
            self.track(tensor)
        return out

    def track(self, tensor: torch.Tensor) -> None:
        key = _storage_key(tensor)
        nbytes = tensor.untyped_storage().nbytes()
        if id(tensor) in self._tracked_ids or key in self._excluded or nbytes == 0:
            return
        self._tracked_ids.add(id(tensor))
        weakref.finalize(tensor, self._release, id(tensor), key)
        if key not in self._tensors_of:
            self._tensors_of[key] = 0
            self._bytes_of[key] = nbytes
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        self._tensors_of[key] += 1

    def _release(self, tensor_id: int, key: int) -> None:
        self._tracked_ids.discard(tensor_id)
        self._tensors_of[key] -= 1
        if self._tensors_of[key] == 0:
            del self._tensors_of[key]
            self.live_bytes -= self._bytes_of.pop(key)


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def _tensors_in(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors_in(item)

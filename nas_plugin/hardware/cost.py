"""Hardware cost of a built model: size, compute, latency and peak inference memory, measured on
the device the model is on (the CPU, or a CUDA GPU with CUDA events and the caching allocator's
peak)."""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    """:func:`measure_cost` with the settings of an app's ``hardware`` config section
    (``latency_repeats``, default 30; ``latency_warmup``, default 5; ``batch_sizes``, default
    [1]), on the device the model is on. With an active MLflow run, the run is tagged with where
    the figures came from (:func:`cost_tags`: ``hardware.device``, ``hardware.latency_timer``,
    ``hardware.memory``).

    Raises:
        ValueError: ``hardware.batch_sizes`` is not a list of positive integers.
    """
    cost = measure_cost(
        model,
        input_shape,
        latency_repeats=int(hardware.get("latency_repeats", 30)),
        warmup=int(hardware.get("latency_warmup", 5)),
        batch_sizes=check_batch_sizes(hardware.get("batch_sizes")),
    )
    import mlflow  # here: measuring needs no tracking, and mlflow is slow to import

    if mlflow.active_run() is not None:
        mlflow.set_tags(cost_tags(model))
    return cost


def check_batch_sizes(value: Any, key: str = "hardware.batch_sizes") -> tuple[int, ...]:
    """``value`` (null: ``[1]``) as a tuple of distinct positive batch sizes, in order.

    Raises:
        ValueError: not a non-empty list of positive integers; the message names ``key``.
    """
    if value is None:
        return (1,)
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise ValueError(
            f"{key} = {value!r} is not allowed: expected a list of positive integers, e.g. [1, 64]"
        )
    sizes = list(value)
    if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(
            f"{key} = {sizes!r} is not allowed: expected a non-empty list of positive integers, "
            "e.g. [1, 64]"
        )
    return tuple(dict.fromkeys(sizes))


def measure_cost(
    model: nn.Module,
    input_shape: tuple[int, ...],
    latency_repeats: int = 30,
    warmup: int = 5,
    batch_sizes: Sequence[int] = (1,),
) -> dict[str, float]:
    """Measure what running ``model`` on inputs of ``input_shape`` costs on the device it is on.

    ``input_shape`` is the shape of ONE input without the batch dimension, e.g. ``(1, 8, 8)``;
    every measurement runs in eval mode, under ``torch.no_grad()``, in the model's own dtype,
    with random values in [0, 1] on the model's device. Its train/eval state is restored
    afterwards. ``flops`` and ``peak_memory_mb`` are of a batch of 1; latency is timed at every
    batch size of ``batch_sizes``.

    Returns:
        ``params``: number of parameters (trainable or not; shared ones counted once).
        ``flops``: floating-point operations of one forward as counted by torch's
            ``FlopCounterMode``: 2 per multiply-accumulate, for matmuls and convolutions only
            (element-wise ops, pooling and normalisation are not counted).
        ``latency_ms``: median time of one forward over ``latency_repeats`` runs after
            ``warmup`` untimed ones, at batch 1 if ``batch_sizes`` holds it, else at its first
            size. On the CPU: wall time with the current ``torch.get_num_threads()`` threads; on
            CUDA: CUDA events around the forward on the model's device (kernel time, the
            launch queue drained before each run).
        ``latency_ms_bs{N}``: the same at batch size N, for every N of ``batch_sizes`` when it
            is not just ``[1]``.
        ``peak_memory_mb``: bytes of parameters and buffers plus the peak bytes of tensors
            alive at the same time during one forward (the input, every op's outputs until
            they are freed), in MiB (2**20 bytes). On the CPU it is measured by tracking the
            storages that aten ops return (scratch space inside kernels and allocator overhead
            are not included: a lower bound on the process's extra resident memory); on CUDA
            it is ``torch.cuda.max_memory_allocated`` over the forward (workspaces included)
            above what was allocated before it.

    Raises:
        ValueError: bad repeats or batch sizes, or a model whose tensors are on several devices.
    """
    if latency_repeats < 1 or warmup < 0:
        raise ValueError(
            f"latency_repeats = {latency_repeats} and warmup = {warmup}: expected "
            "latency_repeats >= 1 and warmup >= 0"
        )
    sizes = check_batch_sizes(batch_sizes, key="batch_sizes")
    device = model_device(model)
    generator = torch.Generator().manual_seed(0)
    dtype = next((t.dtype for t in model.parameters() if t.is_floating_point()), torch.float32)

    def example_of(batch: int) -> torch.Tensor:
        return torch.rand((batch, *input_shape), generator=generator).to(device, dtype)

    example = example_of(1)
    latency: dict[int, float] = {}
    with _eval_mode(model), torch.no_grad():
        flops = _count_flops(model, example)
        if device.type == "cuda":
            activation_bytes = _cuda_peak_bytes(model, example, device)
        else:
            activation_bytes = _peak_activation_bytes(model, example)
        for batch in sizes:
            inputs = example if batch == 1 else example_of(batch)
            latency[batch] = _median_latency_ms(model, inputs, latency_repeats, warmup, device)

    state_bytes = sum(t.numel() * t.element_size() for t in _params_and_buffers(model))
    cost = {
        "params": float(sum(p.numel() for p in model.parameters())),
        "flops": float(flops),
        "latency_ms": latency[1] if 1 in latency else latency[sizes[0]],
        "peak_memory_mb": (state_bytes + activation_bytes) / MIB,
    }
    if sizes != (1,):
        cost.update({f"latency_ms_bs{batch}": ms for batch, ms in latency.items()})
    return cost


def cost_tags(model: nn.Module) -> dict[str, str]:
    """Where :func:`measure_cost`'s figures for ``model`` come from, as MLflow tags:
    ``hardware.device`` (``cpu (N threads)``, or ``cuda:0 (<GPU name>)``),
    ``hardware.latency_timer`` (``perf_counter`` or ``cuda_events``) and ``hardware.memory``
    (``live_tensors`` or ``cuda_max_memory_allocated``)."""
    device = model_device(model)
    if device.type == "cuda":
        return {
            "hardware.device": f"{device} ({torch.cuda.get_device_name(device)})",
            "hardware.latency_timer": "cuda_events",
            "hardware.memory": "cuda_max_memory_allocated",
        }
    name = f"cpu ({torch.get_num_threads()} threads)" if device.type == "cpu" else str(device)
    return {
        "hardware.device": name,
        "hardware.latency_timer": "perf_counter",
        "hardware.memory": "live_tensors",
    }


def model_device(model: nn.Module) -> torch.device:
    """The one device ``model``'s parameters and buffers are on (the CPU for a model without).

    Raises:
        ValueError: they are on several devices.
    """
    devices = {t.device for t in _params_and_buffers(model)}
    if len(devices) > 1:
        raise ValueError(
            f"the model's tensors are on several devices {sorted(map(str, devices))}: measure a "
            "model on one device"
        )
    return devices.pop() if devices else torch.device("cpu")


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


def _median_latency_ms(
    model: nn.Module, example: torch.Tensor, repeats: int, warmup: int, device: torch.device
) -> float:
    if device.type == "cuda":
        return _cuda_median_latency_ms(model, example, repeats, warmup, device)
    for _ in range(warmup):
        model(example)
    _synchronize(device)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(example)
        _synchronize(device)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings) * 1000.0


def _cuda_median_latency_ms(
    model: nn.Module, example: torch.Tensor, repeats: int, warmup: int, device: torch.device
) -> float:
    # Events time the GPU's work, not the Python loop that queues it; warm-up runs absorb the
    # first calls' kernel selection and allocator growth.
    with torch.cuda.device(device):
        for _ in range(max(warmup, 1)):
            model(example)
        torch.cuda.synchronize(device)
        timings = []
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            model(example)
            end.record()
            end.synchronize()
            timings.append(start.elapsed_time(end))
    return statistics.median(timings)


def _cuda_peak_bytes(model: nn.Module, example: torch.Tensor, device: torch.device) -> int:
    """The input's bytes plus the caching allocator's peak during one forward above what was
    allocated before it (the model's own tensors, anything else the process holds)."""
    model(example)  # a first call may allocate lazily-created state; measure a steady one
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    model(example)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    return example.numel() * example.element_size() + max(peak, 0)


def _synchronize(device: torch.device) -> None:
    if device.type == "mps":
        torch.mps.synchronize()


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

"""Where and how a trial computes: ``train.device``, ``train.precision``, ``train.channels_last``
and ``train.compile``, resolved once into a :class:`Runtime` that every training path uses.

``train.device``: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
``train.precision``: ``auto`` (bf16 on a CUDA device of compute capability 8.0+, else fp16
mixed on CUDA; 32 on CPU and MPS), ``32``, ``bf16`` (autocast to bfloat16) or ``16-mixed``
(autocast to float16 with a gradient scaler; CUDA and MPS only). ``train.channels_last``:
``auto`` (on for CUDA), ``true`` or ``false``. ``train.compile``: ``false`` (default) or ``true``
(``torch.compile``).

Resolving a device that is not there raises :class:`DeviceError`, naming the key, the value and
the devices this machine has, so a sweep can check it before any trial starts.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"
PRECISIONS = ("auto", "32", "bf16", "16-mixed")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class DeviceError(ValueError):
    """A device or precision this machine cannot provide, or an unknown one."""


def available_devices() -> list[str]:
    """The devices this process can use, e.g. ``['cpu', 'cuda:0', 'cuda:1']``."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        devices.append("mps")
    return devices


def resolve_device(spec: Any = "auto", key: str = "train.device") -> torch.device:
    """The ``torch.device`` that ``spec`` names on this machine.

    Raises:
        DeviceError: ``spec`` is not one of ``auto, cpu, cuda, cuda:N, mps``, or names a device
            this machine does not have (the message lists those it has).
    """
    text = "auto" if spec is None else str(spec).strip().lower()
    if not _DEVICE_PATTERN.match(text):
        raise DeviceError(f"{key} = {spec!r} is not allowed: expected one of {DEVICE_CHOICES}")
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(text)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(_missing(key, spec, "CUDA is not available"))
        # Plain "cuda" is the current device, as in torch (a GPU slot may have selected it).
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise DeviceError(_missing(key, spec, f"{torch.cuda.device_count()} CUDA device(s)"))
        return torch.device("cuda", index)
    if device.type == "mps" and not _mps_available():
        raise DeviceError(_missing(key, spec, "MPS is not available"))
    return device


def resolve_precision(spec: Any, device: torch.device, key: str = "train.precision") -> str:
    """``32``, ``bf16`` or ``16-mixed``: what ``spec`` means on ``device``.

    Raises:
        DeviceError: an unknown precision, fp16 mixed precision on the CPU, or bf16 on a CUDA
            device without bf16 support.
    """
    text = "auto" if spec is None else str(spec).strip().lower()
    text = {"32-true": "32", "fp32": "32", "bf16-mixed": "bf16", "fp16": "16-mixed"}.get(text, text)
    if text not in PRECISIONS:
        raise DeviceError(
            f"{key} = {spec!r} is not allowed: expected one of {', '.join(PRECISIONS)}"
        )
    if text == "auto":
        if device.type != "cuda":
            return "32"
        return "bf16" if native_bf16(device) else "16-mixed"
    if text == "16-mixed" and device.type == "cpu":
        raise DeviceError(
            f"{key} = {spec!r} is not allowed on the CPU: fp16 mixed precision needs CUDA or "
            "MPS; use bf16 or 32 on the CPU"
        )
    if text == "bf16" and device.type == "cuda" and not native_bf16(device):
        raise DeviceError(
            f"{key} = {spec!r} is not allowed: {torch.cuda.get_device_name(device)} (compute "
            f"capability {'.'.join(map(str, torch.cuda.get_device_capability(device)))}) has no "
            "native bfloat16 (8.0+); use 16-mixed or 32"
        )
    return text


def native_bf16(device: torch.device) -> bool:
    """Whether the CUDA ``device`` itself computes in bfloat16 in hardware (compute capability
    8.0+, or a ROCm GPU). Not ``torch.cuda.is_bf16_supported()``: it counts software emulation
    (a T4 or V100 says yes, then cuDNN has no bf16 convolutions) and asks the current device,
    not ``cuda:N``."""
    return bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8


@dataclass(frozen=True)
class Runtime:
    """The resolved device and numerics of one trial's training and evaluation."""

    device: torch.device
    precision: str = "32"  # "32" | "bf16" | "16-mixed"
    channels_last: bool = False
    compile: bool = False

    @classmethod
    def from_config(cls, train_cfg: Mapping[str, Any] | None) -> Runtime:
        """The runtime ``train.device/precision/channels_last/compile`` describe (defaults: auto,
        auto, auto, false).

        Raises:
            DeviceError: see :func:`resolve_device` and :func:`resolve_precision`.
        """
        train_cfg = train_cfg or {}
        device = resolve_device(train_cfg.get("device", "auto"))
        precision = resolve_precision(train_cfg.get("precision", "auto"), device)
        channels_last = train_cfg.get("channels_last", "auto")
        if channels_last in ("auto", None):
            channels_last = device.type == "cuda"
        elif not isinstance(channels_last, bool):
            raise DeviceError(
                f"train.channels_last = {channels_last!r} is not allowed: expected auto, true "
                "or false"
            )
        compile_model = train_cfg.get("compile", False)
        if not isinstance(compile_model, bool):
            raise DeviceError(
                f"train.compile = {compile_model!r} is not allowed: expected true or false"
            )
        return cls(device, precision, bool(channels_last), compile_model)

    @classmethod
    def cpu(cls) -> Runtime:
        return cls(torch.device("cpu"))

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "16-mixed": torch.float16}.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """A ``torch.autocast`` context for the forward pass (a no-op at precision 32)."""
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled only for fp16 (bf16 and fp32 need none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "16-mixed")

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device (channels-last memory format when set) in place and
        return it; the caller keeps the uncompiled module for saving (see :meth:`compiled`)."""
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def compiled(self, model: nn.Module) -> nn.Module:
        """``torch.compile(model)`` when ``train.compile`` is true, else ``model`` itself."""
        return torch.compile(model) if self.compile else model

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on the device (asynchronously from pinned memory); 4-D images in
        channels-last format when set."""
        tensor = tensor.to(self.device, non_blocking=True)
        if self.channels_last and tensor.dim() == 4:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    @property
    def pin_memory(self) -> bool:
        """Whether DataLoaders should pin host memory (only worth it for CUDA)."""
        return self.device.type == "cuda"

    def describe(self) -> dict[str, str]:
        """What the trial actually used, as MLflow params/tags: ``runtime.device`` (with the
        GPU's name on CUDA), ``runtime.precision``, ``runtime.channels_last``,
        ``runtime.compile``."""
        device = str(self.device)
        if self.device.type == "cuda":
            device += f" ({torch.cuda.get_device_name(self.device)})"
        return {
            "runtime.device": device,
            "runtime.precision": self.precision,
            "runtime.channels_last": str(self.channels_last).lower(),
            "runtime.compile": str(self.compile).lower(),
        }

    def synchronize(self) -> None:
        """Wait for the device's queued work (for timing)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()


@contextlib.contextmanager
def on_cpu(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` moved to the CPU for the block (logging a model that loads on any machine),
    then back to the device its parameters were on."""
    params = list(model.parameters()) + list(model.buffers())
    device = params[0].device if params else torch.device("cpu")
    model.to("cpu")
    try:
        yield model
    finally:
        model.to(device)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _missing(key: str, spec: Any, reason: str) -> str:
    return (
        f"{key} = {spec!r} is not available on this machine ({reason}); it has: "
        f"{', '.join(available_devices())}. Use {key}=auto or one of those"
    )

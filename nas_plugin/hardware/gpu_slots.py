"""One trial per GPU: ``hydra.sweeper.gpus_per_trial``.

The sweeper plans (:func:`plan_gpus`, before any trial): which GPUs the sweep may use (its own
``CUDA_VISIBLE_DEVICES``, or every GPU), how many trials can run side by side
(``visible GPUs // gpus_per_trial``), and what the launcher must be told:

- **joblib** (loky): ``hydra.launcher.n_jobs`` at most that many (``-1``, the default, becomes
  it); each worker process claims its own GPUs (below);
- **submitit**: ``gpus_per_node = gpus_per_trial``. On Slurm, Slurm gives every job its own
  GPUs. submitit's *local* executor hands every job the same first GPUs, so there each job
  claims its own, like a joblib worker, and ``hydra.sweeper.batch_size`` may not exceed the
  slots;
- **Ray**: ``hydra.launcher.ray.remote.num_gpus = gpus_per_trial``; Ray schedules each trial
  onto free GPUs and sets ``CUDA_VISIBLE_DEVICES`` for it itself;
- **basic** (one trial at a time in the sweeper's process): the trial runs on the first slot.

The job applies the plan (:func:`use_gpus`) first thing, before torch touches CUDA, and the
trial's run is tagged ``nas.gpus`` with the GPUs it got (``CUDA_VISIBLE_DEVICES`` entries).

**The pitfall this module exists for.** CUDA reads ``CUDA_VISIBLE_DEVICES`` once per process,
when the driver initialises (``torch.cuda.is_available()`` is enough), and loky *reuses* its
worker processes across trials and sweeps. Handing each trial a GPU from the sweeper and setting
the variable in the job would work for a worker's first trial only: its later trials would stay
on the first trial's GPU whatever the variable says, and two trials would share one GPU. So a
GPU belongs to a **worker process**, not to a trial: a process claims ``gpus_per_trial`` GPUs the
first time it runs a trial (an exclusive ``flock`` per GPU in a per-user lock directory, held
until the process exits, so the OS frees it even if the process is killed), sets
``CUDA_VISIBLE_DEVICES`` to them before CUDA starts, and every later trial in that process runs
on the same GPUs. With ``n_jobs <= slots`` a free GPU always exists for a new worker. A process
whose CUDA view is already fixed (the sweeper's own, with the basic launcher) selects its
claimed GPU with ``torch.cuda.set_device`` instead, so ``train.device`` must then be ``auto`` or
``cuda`` (not ``cuda:N``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KEY = "hydra.sweeper.gpus_per_trial"
TAG_GPUS = "nas.gpus"
# How long a job waits for a GPU held by another process before it fails.
CLAIM_TIMEOUT_S = 60.0
# Launchers whose jobs get their GPUs from the launcher itself.
_LAUNCHER_ASSIGNS = ("ray", "submitit_slurm")


class GpuSlotError(ValueError):
    """``gpus_per_trial`` cannot be honoured on this machine or with this launcher."""


@dataclass(frozen=True)
class GpuPlan:
    """What every job of the sweep needs to take its GPUs (pickled to the jobs)."""

    gpus_per_trial: int
    # The GPUs the sweep may use, as CUDA_VISIBLE_DEVICES entries (indices or UUIDs).
    gpus: tuple[str, ...]
    launcher: str  # basic | joblib | submitit_local | submitit_slurm | ray | other
    lock_dir: str

    @property
    def slots(self) -> int:
        """Trials that can run side by side, each on its own GPUs."""
        return len(self.gpus) // self.gpus_per_trial


def visible_gpus() -> list[str]:
    """This process's GPUs as ``CUDA_VISIBLE_DEVICES`` entries: those of its own variable (as
    many as CUDA counts), else ``0 .. device_count - 1``."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    _STATE.view_fixed = True  # CUDA counted the devices: this process's variable is read
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    return [entry.strip() for entry in listed.split(",") if entry.strip()][:count]


def launcher_kind(launcher_cfg: Mapping[str, Any]) -> str:
    """``basic``, ``joblib``, ``submitit_local``, ``submitit_slurm``, ``ray`` or ``other``, from
    the launcher config's ``_target_``."""
    target = str(launcher_cfg.get("_target_") or "")
    name = target.rsplit(".", 1)[-1]
    if name == "BasicLauncher":
        return "basic"
    if name == "JoblibLauncher":
        return "joblib"
    if "submitit" in target:
        return "submitit_local" if name == "LocalLauncher" else "submitit_slurm"
    if name.startswith("Ray"):
        return "ray"
    return "other"


def plan_gpus(
    gpus_per_trial: Any,
    launcher_cfg: MutableMapping[str, Any],
    batch_size: int = 1,
    gpus: list[str] | None = None,
    lock_dir: str | Path | None = None,
) -> GpuPlan | None:
    """The sweep's GPU plan, or None for ``gpus_per_trial = 0``; sets what the launcher must
    know in ``launcher_cfg`` (a ``hydra.launcher`` node, writable) in place.

    ``gpus``: the GPUs to share out (default: :func:`visible_gpus`); ``lock_dir``: where GPU
    claims are kept (default: one directory per user in the temp dir, shared by every sweep on
    the machine, so that two sweeps do not claim the same GPU either).

    Raises:
        GpuSlotError: not a non-negative integer, no or too few GPUs, more parallel jobs than
            GPU slots, or a launcher setting that contradicts it; the message names the keys.
    """
    if isinstance(gpus_per_trial, bool) or not isinstance(gpus_per_trial, int):
        raise GpuSlotError(f"{KEY}={gpus_per_trial!r} must be an integer >= 0")
    if gpus_per_trial < 0:
        raise GpuSlotError(f"{KEY}={gpus_per_trial} must be >= 0 (0: trials pick no GPU)")
    if gpus_per_trial == 0:
        return None
    gpus = visible_gpus() if gpus is None else list(gpus)
    if not gpus:
        raise GpuSlotError(
            f"{KEY}={gpus_per_trial} asks for GPUs, but this machine has 0 GPUs (CUDA sees no "
            f"device); set {KEY}=0 to run the trials on train.device"
        )
    if gpus_per_trial > len(gpus):
        raise GpuSlotError(
            f"{KEY}={gpus_per_trial} is more than the {len(gpus)} GPU(s) this machine has "
            f"({', '.join(gpus)}); set it to {len(gpus)} or fewer"
        )
    kind = launcher_kind(launcher_cfg)
    plan = GpuPlan(gpus_per_trial, tuple(gpus), kind, str(lock_dir or _default_lock_dir()))
    if kind == "joblib":
        _plan_joblib(plan, launcher_cfg)
    elif kind.startswith("submitit"):
        _set_launcher(launcher_cfg, "gpus_per_node", gpus_per_trial, "hydra.launcher")
        if kind == "submitit_local" and batch_size > plan.slots:
            raise GpuSlotError(_too_many("hydra.sweeper.batch_size", batch_size, plan))
    elif kind == "ray":
        ray_cfg = launcher_cfg.get("ray")
        remote = ray_cfg.get("remote") if ray_cfg is not None else None
        if remote is None:
            raise GpuSlotError(
                f"{KEY}={gpus_per_trial}: the Ray launcher config has no ray.remote section "
                "to set num_gpus in"
            )
        _set_launcher(remote, "num_gpus", gpus_per_trial, "hydra.launcher.ray.remote")
    if kind != "basic" and batch_size < min(plan.slots, 2):
        log.warning(
            "%s=%d gives %d GPU slot(s), but hydra.sweeper.batch_size=%d runs %d trial at a "
            "time; set hydra.sweeper.batch_size=%d to use them all",
            KEY,
            gpus_per_trial,
            plan.slots,
            batch_size,
            batch_size,
            plan.slots,
        )
    log.info(
        "GPUs: %d per trial out of %s (%d trial(s) side by side, launcher %s)",
        gpus_per_trial,
        ",".join(gpus),
        plan.slots,
        kind,
    )
    return plan


def _plan_joblib(plan: GpuPlan, launcher_cfg: MutableMapping[str, Any]) -> None:
    n_jobs = launcher_cfg.get("n_jobs")
    if n_jobs is None or (isinstance(n_jobs, int) and n_jobs <= 0):
        # joblib's "all CPUs": as many workers as GPU slots instead (a worker keeps its GPU).
        launcher_cfg["n_jobs"] = plan.slots
        log.info("hydra.launcher.n_jobs=%s -> %d, one worker per GPU slot", n_jobs, plan.slots)
    elif n_jobs > plan.slots:
        raise GpuSlotError(_too_many("hydra.launcher.n_jobs", n_jobs, plan))


def _too_many(key: str, value: int, plan: GpuPlan) -> str:
    return (
        f"{key}={value} parallel trials with {KEY}={plan.gpus_per_trial} need "
        f"{value * plan.gpus_per_trial} GPUs; this machine has {len(plan.gpus)} "
        f"({', '.join(plan.gpus)}): set {key}={plan.slots} or fewer"
    )


def _set_launcher(cfg: MutableMapping[str, Any], key: str, value: int, where: str) -> None:
    current = cfg.get(key)
    if current not in (None, 0, value):
        raise GpuSlotError(
            f"{where}.{key}={current} contradicts {KEY}={value}: drop {where}.{key} (the "
            f"sweeper sets it) or make them equal"
        )
    cfg[key] = value


# -- the job side ------------------------------------------------------------------------------


@dataclass
class _ProcessState:
    held: tuple[str, ...] = ()
    files: tuple[Any, ...] = ()
    # Whether CUDA may have read CUDA_VISIBLE_DEVICES in this process already.
    view_fixed: bool = False
    jobs: int = 0


_STATE = _ProcessState()


def use_gpus(plan: GpuPlan | None) -> dict[str, str]:
    """Put this job on its GPUs per ``plan`` (None: nothing to do) and return the trial's tags
    (``nas.gpus``). Call it first thing in the job, before anything initialises CUDA.

    Raises:
        RuntimeError: no GPU could be claimed within ``CLAIM_TIMEOUT_S`` (held by other
            processes, named with their process ids).
    """
    first_job = _STATE.jobs == 0
    _STATE.jobs += 1
    if plan is None:
        # A trial without a plan may initialise CUDA: this process's view is fixed from now.
        _STATE.view_fixed = True
        return {}
    if plan.launcher in _LAUNCHER_ASSIGNS:
        return {TAG_GPUS: os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    gpus = claim_gpus(plan)
    view_open = first_job and not _STATE.view_fixed and not _cuda_initialised()
    if view_open or os.environ.get("CUDA_VISIBLE_DEVICES") == ",".join(gpus):
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    else:
        # CUDA already counted this process's devices: pick ours among them.
        _select_among_visible(gpus)
    _STATE.view_fixed = True
    return {TAG_GPUS: ",".join(gpus)}


def claim_gpus(plan: GpuPlan, timeout_s: float = CLAIM_TIMEOUT_S) -> tuple[str, ...]:
    """This process's ``gpus_per_trial`` GPUs of ``plan.gpus``: those it claimed before if they
    fit the plan, else free ones, each claimed with an exclusive lock held until it exits."""
    if _STATE.held and set(_STATE.held) <= set(plan.gpus):
        if len(_STATE.held) == plan.gpus_per_trial:
            return _STATE.held
    if _STATE.held:
        raise RuntimeError(
            f"this worker process holds GPU(s) {','.join(_STATE.held)} from an earlier sweep, "
            f"which do not fit {KEY}={plan.gpus_per_trial} over {','.join(plan.gpus)}; restart "
            "the sweep in a fresh process"
        )
    Path(plan.lock_dir).mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    while True:
        files = []
        for gpu in plan.gpus:
            handle = _try_lock(Path(plan.lock_dir) / f"gpu-{_safe(gpu)}.lock")
            if handle is not None:
                files.append((gpu, handle))
                if len(files) == plan.gpus_per_trial:
                    _STATE.held = tuple(g for g, _ in files)
                    _STATE.files = tuple(h for _, h in files)
                    return _STATE.held
        for _, handle in files:
            handle.close()  # not enough: give back the partial claim, wait, try again
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"no {plan.gpus_per_trial} free GPU(s) among {','.join(plan.gpus)} after "
                f"{timeout_s:g} s; held by: {_holders(plan)}. Another sweep (or a worker of an "
                f"earlier one) is using them; lower hydra.launcher.n_jobs or wait"
            )
        time.sleep(0.2)


def release_gpus() -> None:
    """Give up this process's GPU claim (it ends with the process anyway)."""
    for handle in _STATE.files:
        handle.close()
    _STATE.held, _STATE.files = (), ()


def _try_lock(path: Path) -> Any:
    handle = open(path, "a+")  # noqa: SIM115 - kept open: the lock lives as long as the file
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _holders(plan: GpuPlan) -> str:
    held = []
    for gpu in plan.gpus:
        with contextlib.suppress(OSError):
            pid = (Path(plan.lock_dir) / f"gpu-{_safe(gpu)}.lock").read_text().strip()
            held.append(f"GPU {gpu}: pid {pid or '?'}")
    return "; ".join(held) or "unknown"


def _select_among_visible(gpus: tuple[str, ...]) -> None:
    import torch

    visible = visible_gpus()
    if gpus[0] not in visible:
        raise RuntimeError(
            f"this process's CUDA already sees only GPU(s) {','.join(visible)} "
            f"(CUDA_VISIBLE_DEVICES is read once per process), not its claimed GPU {gpus[0]}"
        )
    torch.cuda.set_device(visible.index(gpus[0]))


def _cuda_initialised() -> bool:
    import torch

    return bool(torch.cuda.is_initialized())


def _default_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"nas_plugin-gpus-{os.getuid()}"


def _safe(gpu: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", gpu)

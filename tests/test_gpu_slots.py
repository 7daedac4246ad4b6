"""``hydra.sweeper.gpus_per_trial`` on a CPU machine: the plan and its errors, GPU claims by real
(reused) loky worker processes, and a sweep that stops before any trial."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_app_in_process
from test_sweep_config import BASE

from nas_plugin.hardware.gpu_slots import GpuSlotError, claim_gpus, plan_gpus, use_gpus
from nas_plugin.sweep.plan import SweepConfigError, build_plan

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
RAY = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
SUBMITIT = "hydra_plugins.hydra_submitit_launcher.submitit_launcher."
FOUR = ["0", "1", "2", "3"]
PIPELINE = str(REPO / "pipelines" / "vision.py")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_zero_is_off_and_bad_values_name_the_key() -> None:
    assert plan_gpus(0, {"_target_": JOBLIB}) is None
    for bad in (-1, "one", True, 1.5):
        with pytest.raises(GpuSlotError, match=r"hydra.sweeper.gpus_per_trial=.* must be"):
            plan_gpus(bad, {"_target_": JOBLIB}, gpus=FOUR)
    with pytest.raises(SweepConfigError, match="hydra.sweeper.gpus_per_trial=-1 must be >= 0"):
        build_plan({**BASE, "gpus_per_trial": -1}, [])


@no_cuda
def test_no_gpu_is_an_error_naming_key_value_and_zero_gpus() -> None:
    with pytest.raises(
        GpuSlotError, match=r"gpus_per_trial=1 asks for GPUs, but this machine has 0"
    ):
        plan_gpus(1, {"_target_": JOBLIB, "n_jobs": -1})


def test_joblib_gets_one_worker_per_slot_and_refuses_more() -> None:
    launcher = {"_target_": JOBLIB, "n_jobs": -1}
    plan = plan_gpus(2, launcher, batch_size=2, gpus=FOUR)
    assert plan.slots == 2 and launcher["n_jobs"] == 2  # joblib's "all CPUs" -> the slots
    with pytest.raises(GpuSlotError) as err:
        plan_gpus(1, {"_target_": JOBLIB, "n_jobs": 8}, batch_size=8, gpus=FOUR)
    assert str(err.value) == (
        "hydra.launcher.n_jobs=8 parallel trials with hydra.sweeper.gpus_per_trial=1 need 8 "
        "GPUs; this machine has 4 (0, 1, 2, 3): set hydra.launcher.n_jobs=4 or fewer"
    )
    with pytest.raises(GpuSlotError, match="more than the 4 GPU"):
        plan_gpus(5, {"_target_": JOBLIB}, gpus=FOUR)


def test_ray_and_submitit_are_told_the_gpus_of_a_trial() -> None:
    ray = {"_target_": RAY, "ray": {"init": {}, "remote": {}}}
    assert plan_gpus(1, ray, batch_size=4, gpus=FOUR).launcher == "ray"
    assert ray["ray"]["remote"]["num_gpus"] == 1
    with pytest.raises(GpuSlotError, match=r"hydra.launcher.ray.remote.num_gpus=2 contradicts"):
        plan_gpus(1, {"_target_": RAY, "ray": {"remote": {"num_gpus": 2}}}, gpus=FOUR)
    slurm = {"_target_": SUBMITIT + "SlurmLauncher", "gpus_per_node": None}
    plan_gpus(2, slurm, batch_size=16, gpus=FOUR)  # Slurm finds the GPUs on its nodes
    assert slurm["gpus_per_node"] == 2
    # submitit's local executor would give every job the same first GPUs: no more jobs at a
    # time than slots.
    with pytest.raises(GpuSlotError, match=r"hydra.sweeper.batch_size=3 .* set .*=2 or fewer"):
        plan_gpus(2, {"_target_": SUBMITIT + "LocalLauncher"}, batch_size=3, gpus=FOUR)


def probe(plan):
    """Runs in a loky worker: the GPUs it got, twice (a worker keeps its claim)."""
    first = use_gpus(plan)
    return (
        os.getpid(),
        first["nas.gpus"],
        use_gpus(plan)["nas.gpus"],
        os.environ["CUDA_VISIBLE_DEVICES"],
    )


def test_reused_loky_workers_keep_one_gpu_each_and_others_wait_for_a_free_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor

    # Workers import this module by name; it lives in tests/.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), *sys.path]))
    launcher = {"_target_": JOBLIB, "n_jobs": -1}
    plan = plan_gpus(1, launcher, batch_size=2, gpus=["0", "1"], lock_dir=tmp_path)
    assert launcher["n_jobs"] == 2
    try:
        results = Parallel(n_jobs=2, backend="loky")(delayed(probe)(plan) for _ in range(8))
        gpu_of: dict[int, str] = {}
        for pid, first, again, visible in results:
            assert first == again == visible  # CUDA_VISIBLE_DEVICES is the claimed GPU
            assert gpu_of.setdefault(pid, first) == first  # a reused worker keeps its GPU
        assert len(set(gpu_of.values())) == len(gpu_of)  # no GPU shared by two workers
        if len(gpu_of) == 2:  # both GPUs held by live workers: a third process must wait
            with pytest.raises(RuntimeError, match=r"no 1 free GPU\(s\) among 0,1 .*GPU 0: pid"):
                claim_gpus(plan, timeout_s=0.3)
    finally:
        get_reusable_executor().shutdown(wait=True)


@no_cuda
@pytest.mark.e2e
@pytest.mark.parametrize(
    "override, message",
    [
        (
            "hydra.sweeper.gpus_per_trial=1",
            "hydra.sweeper.gpus_per_trial=1 asks for GPUs, but this machine has 0 GPUs",
        ),
        ("++train.device=cuda", "train.device = 'cuda' is not available on this machine"),
        ("task.augment=mixup", "task.augment = 'mixup' is not allowed: expected one of none"),
    ],
)
def test_a_sweep_asking_for_missing_gpus_stops_before_any_trial(
    tmp_path: Path, override: str, message: str
) -> None:
    result = run_app_in_process(tmp_path, PIPELINE, "-m", "hydra.sweeper.n_trials=2", override)
    assert result.proc.returncode != 0
    assert message in result.output
    assert "it has: cpu" in result.output or "train.device" not in override
    assert not (tmp_path / "mlflow.db").exists() or "trial-000" not in result.output

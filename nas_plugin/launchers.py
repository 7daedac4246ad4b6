"""What the sweeper must know about Hydra's launchers to launch trials concurrently.

Asynchronous refill calls ``launcher.launch`` from several threads at once, one trial per call.
That is safe for launchers that hand the job to another process and wait (joblib, submitit,
Ray), with two quirks handled here: the basic launcher runs the job in the sweeper's own process
through Hydra's global state, so it can only run one at a time; and the Ray launcher starts Ray
lazily inside ``launch`` (check, then ``ray.init``), which two threads can race into, and
passes an ``object_store_memory`` that Ray refuses when joining an existing cluster.
"""

from __future__ import annotations

import logging

from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

# The Ray launcher's own default (hydra_ray_launcher._core.launch): Ray's default object store
# is sized to the machine, too much on a small CI box.
_RAY_OBJECT_STORE_BYTES = 78_643_200


def runs_jobs_in_process(launcher: Launcher) -> bool:
    """Whether the launcher runs jobs in the sweeper's process, one at a time."""
    return type(launcher).__name__ == "BasicLauncher"


def prepare_launcher(launcher: Launcher) -> None:
    """Do, once and in the sweeper's thread, what a launcher would otherwise do lazily in
    every ``launch`` call (unsafely, when launches are concurrent)."""
    ray_cfg = getattr(launcher, "ray_cfg", None)
    if type(launcher).__name__ == "RayLauncher" and ray_cfg is not None:
        import ray

        if not ray.is_initialized():
            init = OmegaConf.to_container(ray_cfg.init, resolve=True) or {}
            if init.get("address") in (None, "", "local"):
                # Only for a local Ray started here: Ray refuses the setting when joining an
                # existing cluster (ray start --head), which the launcher's own default breaks.
                init.setdefault("object_store_memory", _RAY_OBJECT_STORE_BYTES)
            log.info("Starting Ray for the sweep: ray.init(%s)", init)
            ray.init(**init)

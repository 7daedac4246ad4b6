"""The sweep's output directory (``hydra.sweep.dir``).

Nothing in it is read back: a sweep's state lives in MLflow, and resume reads it from there. So
what an earlier, killed sweep left in the directory (a truncated ``multirun.yaml``, half-written
job directories, stray files) cannot mislead a rerun: ``multirun.yaml`` is replaced, and a trial
that runs again writes its job directory over the old one. Only a path that cannot be written at
all stops the sweep, before any trial, with a message that says which.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nas_plugin.sweep.plan import SweepConfigError


def prepare_sweep_dir(sweep_dir: Path, config: DictConfig) -> None:
    """Create ``sweep_dir`` and write ``multirun.yaml`` in it atomically."""
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise SweepConfigError(
            f"hydra.sweep.dir={str(sweep_dir)!r} exists and is not a directory; remove it or "
            "choose another hydra.sweep.dir"
        )
    target = sweep_dir / "multirun.yaml"
    if target.exists() and not target.is_file():
        raise SweepConfigError(
            f"{str(target)!r} exists and is not a file, so the sweep's config cannot be saved "
            "there; remove it or choose another hydra.sweep.dir"
        )
    sweep_dir.mkdir(parents=True, exist_ok=True)
    # Write then rename: a sweep killed while saving never leaves a truncated file behind.
    handle, temporary = tempfile.mkstemp(dir=sweep_dir, prefix=".multirun.", suffix=".yaml")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(OmegaConf.to_yaml(config))
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

"""Text NAS pipeline: one trial = build a transformer encoder from the config, train it, score it.

Run from the repository root::

    python pipelines/text.py -m            # a real architecture search (see conf/text.yaml)
    python pipelines/text.py               # train the config's single architecture once
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="text")
def main(cfg: DictConfig) -> dict[str, float]:
    from nas_plugin.tasks.text import run_text_trial
    from nas_plugin.tracking.standalone import run_outside_sweep

    # Inside a NAS sweep the trial's MLflow run is already active; a single run opens its own.
    return run_outside_sweep(cfg, run_text_trial)


if __name__ == "__main__":
    main()

"""Vision NAS pipeline: one trial = build a timm model from the config, train it, score it.

python pipelines/vision.py -m          # a real architecture search (see conf/vision.yaml)
python pipelines/vision.py             # train the config's single architecture once
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="vision")
def main(cfg: DictConfig) -> dict[str, float]:
    from nas_plugin.tasks.vision import run_vision_trial
    from nas_plugin.tracking.standalone import run_outside_sweep

    # Inside a NAS sweep the trial's MLflow run is already active; a single run opens its own.
    return run_outside_sweep(cfg, run_vision_trial)


if __name__ == "__main__":
    main()

"""Segmentation NAS pipeline: one trial = build an Auto-DeepLab-style network from the config,
train it on per-pixel masks, score it by validation mean IoU.

python pipelines/segmentation.py -m    # a real architecture search (see conf/segmentation.yaml)
python pipelines/segmentation.py       # train the config's single architecture once (the baseline)
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="segmentation")
def main(cfg: DictConfig) -> dict[str, float]:
    from nas_plugin.tasks.segmentation import run_segmentation_trial
    from nas_plugin.tracking.standalone import run_outside_sweep

    # Inside a NAS sweep the trial's MLflow run is already active; a single run opens its own.
    return run_outside_sweep(cfg, run_segmentation_trial)


if __name__ == "__main__":
    main()

"""Detection NAS pipeline: one trial = build a SpineNet-style FCOS detector from the config,
train it on boxes, score it by validation mAP@0.5.

python pipelines/detection.py -m    # a real architecture search (see conf/detection.yaml)
python pipelines/detection.py       # train the config's single architecture once (the baseline)
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="detection")
def main(cfg: DictConfig) -> dict[str, float]:
    from nas_plugin.tasks.detection import run_detection_trial
    from nas_plugin.tracking.standalone import run_outside_sweep

    # Inside a NAS sweep the trial's MLflow run is already active; a single run opens its own.
    return run_outside_sweep(cfg, run_detection_trial)


if __name__ == "__main__":
    main()

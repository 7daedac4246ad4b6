"""Once-for-All hardware targets: one elastic mbconv supernet, one registered subnet per budget.

python pipelines/ofa.py                                        # see conf/ofa.yaml
python pipelines/ofa.py search.budget_unit=ms 'search.budgets=[1.0,2.0]' finetune.epochs=2
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="ofa")
def main(cfg: DictConfig) -> None:
    from nas_plugin.supernets.ofa_targets import run_ofa
    from nas_plugin.tracking.reporter import mlflow_reporting

    with mlflow_reporting():  # training curves and the per-budget models go to MLflow
        result = run_ofa(cfg)
    print(
        f"OFA parent run {result['parent_run_id']} (experiment {cfg.mlflow.experiment}) on "
        f"{result['runtime.device']} at precision {result['runtime.precision']}"
    )
    for budget_ms, version in result["versions"].items():
        where = f"models:/{cfg.mlflow.model_name}/{version}" if version else "FAILED (see run)"
        print(f"  budget {budget_ms:.3f} ms -> {where}")


if __name__ == "__main__":
    main()

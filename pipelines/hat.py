"""HAT: one elastic transformer supernet, one registered sub-transformer per latency budget.

python pipelines/hat.py                                        # see conf/hat.yaml
python pipelines/hat.py search.budget_unit=ms 'search.budgets=[0.8,1.2]' train.epochs=3
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="hat")
def main(cfg: DictConfig) -> None:
    from nas_plugin.supernets.hat import run_hat
    from nas_plugin.tracking.reporter import mlflow_reporting

    with mlflow_reporting():  # training curves and the per-budget models go to MLflow
        result = run_hat(cfg)
    error = result["predictor"]
    print(
        f"HAT parent run {result['parent_run_id']} (experiment {cfg.mlflow.experiment}) on "
        f"{result['runtime.device']}; latency predictor held-out RMSE {error['rmse_ms']:.3f} ms, "
        f"{100 * error['within_10pct']:.0f}% within +-10%"
    )
    for budget_ms, version in result["versions"].items():
        where = f"models:/{cfg.mlflow.model_name}/{version}" if version else "FAILED (see run)"
        print(f"  budget {budget_ms:.3f} ms -> {where}")


if __name__ == "__main__":
    main()

"""In-process benchmarks of strategies on tabular NAS benchmarks (no Hydra, no MLflow)."""

"""MLflow: trial runs (job side); parent run, leaderboard and registry (sweeper side)."""

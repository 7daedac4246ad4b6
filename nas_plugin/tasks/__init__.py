"""Tasks: data, model building and the training loop of one trial."""

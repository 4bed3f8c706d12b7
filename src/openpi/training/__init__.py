"""Training: configs, data loading, checkpoints, optimizers."""

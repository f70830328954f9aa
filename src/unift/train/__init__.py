"""Training: the optimizer and schedule, checkpoints, metrics sinks and the training loop."""

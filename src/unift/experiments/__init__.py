"""Self-contained experiments shipped with unift (`unift horizon`): not part of the training library."""

"""Using a trained (or untrained) model: load a checkpoint, predict masks, score them, baselines."""

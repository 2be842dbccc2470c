"""Training: one train_one_epoch / evaluate pair, Select rounds, the curriculum over them,
checkpoints, and `train` (the library function behind `ppt-labels train`)."""

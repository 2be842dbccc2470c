"""Training inputs: samples and targets from label stores, and the cached frozen features."""

"""Human-facing views of a label store: the dataset card (`stats`) and rendered samples (`show`)."""

"""The trainer (DESIGN §6): the point generator, its set loss, the curriculum and Select, on label
stores made by the pipeline."""

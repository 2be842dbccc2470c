"""The bottom layer: errors, params and config reading (and JSON), hashing, COCO RLE, progress
bars. Imports nothing else of the project."""

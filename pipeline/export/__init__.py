"""Pseudo-labels out of a label store, in the formats other tools read (refer toolkit, COCO)."""

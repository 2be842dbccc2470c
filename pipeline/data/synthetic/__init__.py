"""The embedded synthetic referring dataset: scenes, the expressions that refer into them, and the
generator that writes them in refer layout."""

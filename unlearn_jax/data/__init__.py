"""Data: TFDS sources, forget-set specifications and splits, batching by index."""

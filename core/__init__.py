"""vicl's core: what every other package builds on (node types, the sample schema and its
reader, the image codec, the perceptual hash, cell geometry, map resizing, weight lookup, the
torchvision shim). It imports nothing of vicl's own packages; annotators/, mining/, training/
and pipelines/ import it (tests/test_layers.py keeps it so)."""

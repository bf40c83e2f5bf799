"""The pipeline's stages; each is a pure core plus a thin Ray Data wrapper, called by the CLI and dvc alike."""

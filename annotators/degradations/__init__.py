"""Degradations (Graph200K's 32 restoration sources) and VIRAL's restoration sources.

`operators` holds the registry of pure functions (`DEGRADATIONS`, `degrade`), one module
per kind holds the operators themselves, `annotators` wraps each one as an Annotator,
and `online` renders a node on the fly for the sampler.
"""

"""vicl pipeline: stages (ingest, annotate, mine, sample, export), Ray wiring, node store, CLI."""

from core import torchvision_compat as _tv

_tv.install()

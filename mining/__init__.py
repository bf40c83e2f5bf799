"""Open-domain quadruplet mining: embeddings, SemDeDup, task vectors, K-Means, neighbours, filters."""

from core import torchvision_compat as _tv

_tv.install()

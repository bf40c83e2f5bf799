"""Annotators: turn a source image (and nodes already made) into new node types.

Importing the package registers every built-in annotator with `annotators.registry`.
"""

from core import torchvision_compat as _tv

_tv.install()

from annotators import registry  # noqa: E402
from annotators.registry import get, names, register  # noqa: E402,F401

registry.load_builtin()

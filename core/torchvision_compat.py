"""Make torchvision importable on CPU-only machines whose torchvision wheel links CUDA.

PyPI has no CPU build of torchvision 0.28; its compiled ops fail to load next to the CPU
torch, and `import torchvision` then dies registering fake kernels for `torchvision::nms`.
Everything that imports torchvision (open_clip, timm, segment_anything, controlnet_aux,
some transformers image processors) would fail with it.

`install()` puts a finder on `sys.meta_path` that, the first time torchvision is imported,
checks whether the compiled ops load; only when they do not does it define `nms`/`qnms`
with a pure-torch kernel and relax the has-ops guard of `torchvision.ops.boxes`. On a
machine with a matching torchvision this does nothing. It costs nothing until torchvision
is imported, so every vicl package calls it on import (Ray workers included).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

_LIB = None  # keeps the torch.library fragment alive


def _nms_reference(dets, scores, iou_threshold: float):
    """Greedy NMS: keep the best box, drop those overlapping it above the threshold."""
    import torch

    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    x1, y1, x2, y2 = dets.float().unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    order = scores.argsort(descending=True, stable=True)
    suppressed = torch.zeros(dets.shape[0], dtype=torch.bool, device=dets.device)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
        h = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas - inter).clamp(min=1e-12)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=dets.device)


def _compiled_ops_load() -> bool:
    import torch

    if hasattr(torch.ops, "torchvision") and hasattr(torch.ops.torchvision, "nms"):
        return True
    try:
        from importlib.util import find_spec
        import glob
        import os

        spec = find_spec("torchvision")
        if spec is None or not spec.submodule_search_locations:
            return False
        libs = glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "_C*.so"))
        if not libs:
            return False
        torch.ops.load_library(libs[0])
        return True
    except (OSError, ImportError, RuntimeError):
        return False


def _define_fallback_ops() -> None:
    global _LIB
    import torch

    _LIB = torch.library.Library("torchvision", "DEF")
    for name in ("nms", "qnms"):
        _LIB.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIB.impl(name, _nms_reference, "CPU")
        _LIB.impl(name, _nms_reference, "CUDA")


def _relax_boxes_guard() -> None:
    import torchvision.ops.boxes as boxes

    boxes._assert_has_ops = lambda: None


class _TorchvisionFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Stays on sys.meta_path until torchvision is actually executed: libraries probe with
    `importlib.util.find_spec("torchvision")` long before they import it."""

    def __init__(self):
        self._inner = None
        self.patched: bool | None = None  # None: not decided yet

    def find_spec(self, fullname, path, target=None):
        if fullname != "torchvision":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None:
            return None
        if self.patched is None:
            self.patched = False  # decided once, even if importing torch below probes torchvision again
            if not _compiled_ops_load():
                _define_fallback_ops()
                self.patched = True
        self._inner = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        self._inner.exec_module(module)
        if self.patched:
            _relax_boxes_guard()


_FINDER = _TorchvisionFinder()


def install() -> None:
    """Idempotent; a no-op once torchvision is imported."""
    if "torchvision" in sys.modules or _FINDER in sys.meta_path:
        return
    sys.meta_path.insert(0, _FINDER)


def fallback_active() -> bool:
    return bool(_FINDER.patched)

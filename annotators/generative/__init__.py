"""Generative annotators (diffusers): Graph200K's edit and style nodes and VIRAL's analogous pairs.

- `fill_edit` -> FillEdit, FillEdit_1..4 (FLUX.1-Fill: subject replaced, background kept exactly)
- `depth_edit` -> DepthEdit (FLUX.1-Depth: the scene regenerated under the image's depth map)
- `instant_style` -> InstantStyle(_1, _2) + InstantStyle_ref(_1, _2) (SDXL img2img + IP-Adapter on the style block)
- `redux_style` -> ReduxStyle(_1, _2) + ReduxStyle_ref(_1, _2) (FLUX.1-Redux prior + FLUX.1-dev)
- `analogous_pairs` -> analogous_source(_1), analogous_edit(_1) (prompt LM -> FLUX.1-dev -> FLUX.1-Kontext)

Node naming and the meta layout: `annotators.generative.nodes`.
"""

from annotators.generative import nodes  # noqa: F401 - registers the further output node types
from annotators.generative import fill_edit  # noqa: F401
from annotators.generative import depth_edit  # noqa: F401
from annotators.generative import style  # noqa: F401
from annotators.generative import analogous_pairs  # noqa: F401

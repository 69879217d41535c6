"""Sliding-window inference: one blending core, GeoTIFF outputs, previews and streamed evaluation.

- :mod:`falsecl.inference.sliding_window`: the tensor-only core (:class:`SlidingWindowPredictor`).
- :mod:`falsecl.inference.raster`: class-map / confidence / probability GeoTIFFs of any size (``falsecl predict``).
- :mod:`falsecl.inference.preview`: class colours and the preview PNG (image, class map, legend).
- :mod:`falsecl.inference.evaluation`: confusion matrices accumulated block by block (``falsecl evaluate``).
"""

from falsecl.inference.preview import DEFAULT_PALETTE, NODATA_CLASS
from falsecl.inference.sliding_window import (
    Blend,
    SlidingWindowPredictor,
    _coverage,
    argmax_classes,
    blend_profile,
    blend_weights,
    first_conv_in_channels,
)

__all__ = [
    "DEFAULT_PALETTE",
    "NODATA_CLASS",
    "Blend",
    "SlidingWindowPredictor",
    "_coverage",
    "argmax_classes",
    "blend_profile",
    "blend_weights",
    "first_conv_in_channels",
]

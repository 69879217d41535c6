"""Sliding-window inference: one blending core, GeoTIFF outputs, previews and streamed evaluation.

- :mod:`falsecl.inference.sliding_window`: the tensor-only core (:class:`SlidingWindowPredictor`).
- :mod:`falsecl.inference.raster`: class-map / confidence / probability GeoTIFFs of any size (``falsecl predict``).
- :mod:`falsecl.inference.preview`: class colours and the preview PNG (image, class map, legend).
- :mod:`falsecl.inference.evaluation`: confusion matrices accumulated block by block (``falsecl evaluate``).
- :mod:`falsecl.inference.report`: the evaluation's reports and model-card entry.
- :mod:`falsecl.inference.batch`: class maps for many rasters with one model (``falsecl predict``).
- :mod:`falsecl.inference.checkpoint`: run folder <-> checkpoint, loading, the predictor of a checkpoint.
"""

from falsecl.inference.preview import DEFAULT_PALETTE, NODATA_CLASS
from falsecl.inference.sliding_window import (
    Blend,
    SlidingWindowPredictor,
    argmax_classes,
    blend_profile,
    blend_weights,
    first_conv_in_channels,
    window_coverage,
)

__all__ = [
    "DEFAULT_PALETTE",
    "NODATA_CLASS",
    "Blend",
    "SlidingWindowPredictor",
    "window_coverage",
    "argmax_classes",
    "blend_profile",
    "blend_weights",
    "first_conv_in_channels",
]

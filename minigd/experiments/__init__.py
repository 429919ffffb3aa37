"""Experiments on top of fit: the LR range test and the gradient noise scale."""
from .lr_range import LRRangeResult, lr_range_test  # noqa: F401
from .noise_scale import GradientNoiseScale, NoiseScaleEstimate  # noqa: F401
from .noise_scale import gradient_noise_scale, noise_scale_from_norms  # noqa: F401

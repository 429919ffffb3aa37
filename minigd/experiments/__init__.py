"""Experiments on top of fit: the LR range test and the gradient noise scale."""
from .lr_range import LRRangeResult, lr_range_test
from .noise_scale import (GradientNoiseScale, NoiseScaleEstimate, gradient_noise_scale,
                          noise_scale_from_norms)

"""Experiments on top of fit: the LR range test, the gradient noise scale, batch x lr sweeps."""

from .lr_range import LRRangeResult, lr_range_test
from .noise_scale import (
    GradientNoiseScale,
    NoiseScaleEstimate,
    gradient_noise_scale,
    noise_scale_from_norms,
)
from .sweep import MLPBuilder, SweepResult, sweep

__all__ = [
    "GradientNoiseScale",
    "LRRangeResult",
    "MLPBuilder",
    "NoiseScaleEstimate",
    "SweepResult",
    "gradient_noise_scale",
    "lr_range_test",
    "noise_scale_from_norms",
    "sweep",
]

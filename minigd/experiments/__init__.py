"""Experiments on top of fit: batch size x learning rate sweeps."""
from .sweep import MLPBuilder, SweepResult, sweep

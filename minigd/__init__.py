"""minigd: mini-batch gradient descent in NumPy and Numba, built to show how epochs, iterations,
batch size and learning rate shape training."""

from . import datasets, plot, registry, schedules
from .backend import get_backend, set_backend, use_backend
from .callbacks import Callback, EarlyStopping, ReduceLROnPlateau
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .data import BatchIterator
from .estimator import MLPClassifier, MLPRegressor
from .experiments import (
    GradientNoiseScale,
    LRRangeResult,
    MLPBuilder,
    NoiseScaleEstimate,
    SweepResult,
    gradient_noise_scale,
    lr_range_test,
    noise_scale_from_norms,
    sweep,
)
from .explore import explore
from .gradcheck import GradcheckResult, gradcheck
from .history import History
from .layers import (
    Activation,
    BatchNorm,
    Buffer,
    Dense,
    Dropout,
    Flatten,
    Layer,
    Parameter,
    ReLU,
    Sigmoid,
    Tanh,
)
from .liveplot import LivePlot
from .losses import Loss, MSELoss, SoftmaxCrossEntropy
from .metrics import accuracy, evaluate
from .model import Sequential
from .optim import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop
from .schedules import (
    Chain,
    Constant,
    CosineAnnealing,
    CosineWarmRestarts,
    CyclicLR,
    ExponentialDecay,
    MultiStepDecay,
    OneCycle,
    PolynomialDecay,
    Schedule,
    StepDecay,
    Warmup,
    linear_scaling,
    sqrt_scaling,
)
from .tracking import EvaluateEvery
from .training import DivergenceError, TrainingState, fit

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "Adagrad",
    "Adam",
    "AdamW",
    "BatchIterator",
    "BatchNorm",
    "Buffer",
    "Callback",
    "Chain",
    "Checkpoint",
    "Constant",
    "CosineAnnealing",
    "CosineWarmRestarts",
    "CyclicLR",
    "Dense",
    "DivergenceError",
    "Dropout",
    "EarlyStopping",
    "EvaluateEvery",
    "ExponentialDecay",
    "Flatten",
    "GradcheckResult",
    "GradientNoiseScale",
    "History",
    "LRRangeResult",
    "Layer",
    "LivePlot",
    "Loss",
    "MLPBuilder",
    "MLPClassifier",
    "MLPRegressor",
    "MSELoss",
    "MultiStepDecay",
    "NoiseScaleEstimate",
    "OneCycle",
    "Optimizer",
    "Parameter",
    "PolynomialDecay",
    "RMSprop",
    "ReLU",
    "ReduceLROnPlateau",
    "SGD",
    "Schedule",
    "Sequential",
    "Sigmoid",
    "SoftmaxCrossEntropy",
    "StepDecay",
    "SweepResult",
    "Tanh",
    "TrainingState",
    "Warmup",
    "accuracy",
    "datasets",
    "evaluate",
    "explore",
    "fit",
    "get_backend",
    "gradcheck",
    "gradient_noise_scale",
    "linear_scaling",
    "load_checkpoint",
    "lr_range_test",
    "noise_scale_from_norms",
    "plot",
    "registry",
    "save_checkpoint",
    "schedules",
    "set_backend",
    "sqrt_scaling",
    "sweep",
    "use_backend",
]

"""minigd: mini-batch gradient descent in NumPy and Numba, built to show how epochs, iterations,
batch size and learning rate shape training."""
from . import datasets, plot, schedules
from .backend import get_backend, set_backend, use_backend
from .callbacks import Callback, EarlyStopping, ReduceLROnPlateau
from .data import BatchIterator
from .history import History
from .layers import Dense, Parameter, ReLU, Sigmoid, Tanh
from .losses import SoftmaxCrossEntropy
from .metrics import accuracy, evaluate
from .model import Sequential
from .optim import SGD, Adam, AdamW, Optimizer
from .schedules import linear_scaling, sqrt_scaling
from .tracking import EvaluateEvery
from .training import DivergenceError, TrainingState, fit

__version__ = "0.1.0"

__all__ = [
    "Adam", "AdamW", "BatchIterator", "Callback", "Dense", "DivergenceError", "EarlyStopping",
    "History", "Optimizer", "Parameter", "ReLU", "ReduceLROnPlateau", "SGD", "Sequential",
    "Sigmoid", "SoftmaxCrossEntropy", "Tanh", "TrainingState", "accuracy", "datasets",
    "evaluate", "fit", "get_backend", "linear_scaling", "plot", "schedules", "set_backend",
    "sqrt_scaling", "use_backend",
    "EvaluateEvery",
]

"""Datasets for minigd: MNIST loaders and IDX file helpers.

* :func:`load_mnist_sample` -- 10,000 real MNIST digits bundled with the
  package (8000 train / 2000 test), no network needed.
* :func:`load_mnist` -- the full 60,000 / 10,000 MNIST set, downloaded once
  into a local cache and verified.
* :func:`read_idx`, :func:`write_idx` -- the IDX file format MNIST uses.
* :func:`make_regression` -- a synthetic nonlinear regression set made offline from a seed
  (what ``minigd train --task regression`` trains on).
"""

from ._idx import read_idx, write_idx
from ._mnist import DatasetUnavailableError, load_mnist, load_mnist_sample
from ._synthetic import make_regression

__all__ = [
    "load_mnist_sample",
    "load_mnist",
    "read_idx",
    "write_idx",
    "DatasetUnavailableError",
    "make_regression",
]

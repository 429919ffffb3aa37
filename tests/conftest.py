import os

import numpy as np
import pytest

import minigd as mg

# `minigd train` in tests compiles in the foreground: no background compile, no switch of
# backend mid-run (tests/test_warm_start.py turns the warm start back on where it tests it)
os.environ.setdefault("MINIGD_WARM_START", "0")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(params=["numpy", "numba"])
def backend(request):
    """Run a test once per backend (numba is a hard dependency: never skipped)."""
    with mg.use_backend(request.param):
        yield request.param

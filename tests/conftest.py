import numpy as np
import pytest

import minigd as mg


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(params=["numpy", "numba"])
def backend(request):
    """Run a test once per backend (numba is a hard dependency: never skipped)."""
    with mg.use_backend(request.param):
        yield request.param

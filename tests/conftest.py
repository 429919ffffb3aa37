import numpy as np
import pytest

import minigd as mg


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(params=["numpy", "numba"])
def backend(request):
    """Run a test once per backend (skipped where the Numba kernels are not built in)."""
    try:
        mg.backend.kernels(request.param)
    except ImportError:
        pytest.skip(f"backend {request.param} not available")
    with mg.use_backend(request.param):
        yield request.param

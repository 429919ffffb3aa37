"""The Numba backend's tanh: a vectorisable rational approximation in float32 (math.tanh, the
C library, is called per element and never vectorised), math.tanh in float64."""

import math

import numba
import numpy as np
import pytest

from minigd.kernels import jit, jit_gemm, reference


@numba.njit
def _apply(x, out):
    for i in range(x.shape[0]):
        out[i] = jit_gemm.tanh(x[i])


def float32_inputs():
    grid = np.linspace(-12, 12, 400_001, dtype=np.float32)
    small = np.logspace(-12, 1.2, 20_000).astype(np.float32)
    edges = np.array([7.9053111, 4e-4, 3.99e-4, 1e-30, 1.2e-38, 1e-45, 88.0, 1e30], np.float32)
    return np.concatenate([grid, small, -small, edges, -edges])


def test_float32_tanh_is_within_8_ulp_of_exact_tanh():
    x = float32_inputs()
    got = np.empty_like(x)
    _apply(x, got)
    exact = np.tanh(x.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    error = np.abs(got.astype(np.float64) - exact) / ulp
    assert error.max() <= 8, f"worst {error.max():.2f} ulp at x = {x[error.argmax()]!r}"
    assert np.all(np.abs(got) <= 1)
    assert np.array_equal(np.sign(got), np.sign(x))  # odd, and sign-exact (0 stays 0)


def test_float32_tanh_special_values():
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)
    got = np.empty_like(x)
    _apply(x, got)
    assert np.isnan(got[0])
    assert got[1:3].tolist() == [1.0, -1.0]
    assert got[3] == 0 and not np.signbit(got[3]) and np.signbit(got[4])


def test_float64_tanh_is_the_c_library_tanh():
    x = np.linspace(-20, 20, 10_001)
    got = np.empty_like(x)
    _apply(x, got)
    assert np.array_equal(got, [math.tanh(v) for v in x])


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-6), (np.float64, 1e-15)])
def test_tanh_layer_kernels_agree_with_numpy(dtype, rtol):
    z = np.random.default_rng(0).normal(scale=3, size=(37, 29)).astype(dtype)
    got, want = np.empty_like(z), np.empty_like(z)
    jit.tanh_forward(z, got)
    reference.tanh_forward(z, want)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=np.finfo(dtype).eps)

"""The whole-epoch kernel's batch gather (minigd.kernels.jit_epoch.gather) copies exactly the
rows ``order`` names, whatever X's dtype, memory layout or storage, on one thread or split, with
or without its prefetch hints."""

import numpy as np
import pytest

from minigd.kernels import jit_config, jit_epoch


def expected(X, y, order, start, n, dtype):
    rows = order[start : start + n]
    return np.asarray(X)[rows].astype(dtype), y[rows]


def layouts(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((300, 50)).astype(np.float32)
    memmap = np.lib.format.open_memmap(
        tmp_path / "X.npy", mode="w+", dtype=np.float32, shape=(300, 50)
    )
    memmap[...] = base
    memmap.flush()
    return {
        "float32 C": base,
        "float64 C": base.astype(np.float64),
        "uint8 C": rng.integers(0, 256, (300, 50), dtype=np.uint8),
        "float32 Fortran": np.asfortranarray(base),
        "float32 every other column": rng.standard_normal((300, 100)).astype(np.float32)[:, ::2],
        "float32 memmap": np.load(tmp_path / "X.npy", mmap_mode="r"),
    }


@pytest.mark.parametrize("parts", [1, 2])
@pytest.mark.parametrize("n", [1, 5, 64, 300])
def test_gather_copies_the_named_rows(tmp_path, parts, n):
    y = np.arange(300, dtype=np.int64) * 7
    order = np.random.default_rng(1).permutation(300)
    for name, X in layouts(tmp_path).items():
        for dtype in (np.float32, np.float64):
            for start in sorted({0, 300 - n, (300 - n) // 2}):
                xb = np.full((n, 50), np.nan, dtype=dtype)
                yb = np.full(n, -1, dtype=np.int64)
                jit_epoch.gather(X, y, order, start, xb, yb, parts)
                want_x, want_y = expected(X, y, order, start, n, dtype)
                np.testing.assert_array_equal(xb, want_x, err_msg=f"{name} -> {dtype.__name__}")
                np.testing.assert_array_equal(yb, want_y)


def test_gather_copies_the_same_rows_on_both_sides_of_the_split_point():
    # one thread below MIN_PARALLEL_GATHER elements, split above it: the same rows either way
    width = 64
    small = jit_config.MIN_PARALLEL_GATHER // width - 1
    big = jit_config.MIN_PARALLEL_GATHER // width + 1
    X = np.random.default_rng(2).standard_normal((4 * big, width)).astype(np.float32)
    y = np.zeros(len(X), dtype=np.int64)
    order = np.random.default_rng(3).permutation(len(X))
    for n in (small, big):
        xb, yb = np.empty((n, width), np.float32), np.empty(n, np.int64)
        jit_epoch.gather(X, y, order, len(X) - n, xb, yb, 2)
        np.testing.assert_array_equal(xb, X[order[len(X) - n :]])

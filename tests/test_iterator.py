"""BatchIterator invariants: ceil/floor lengths, each sample once, reshuffling, seeding."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigd as mg


def make(n, batch, **kwargs):
    X = np.arange(n, dtype=np.float32).reshape(n, 1)
    return mg.BatchIterator(X, np.arange(n) % 3, batch, copy=True, **kwargs)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), batch=st.integers(1, 80), shuffle=st.booleans(),
       seed=st.integers(0, 2**32))
def test_every_sample_exactly_once_per_epoch(n, batch, shuffle, seed):
    it = make(n, batch, shuffle=shuffle, seed=seed)
    assert len(it) == math.ceil(n / batch)
    batches = list(it)
    assert len(batches) == len(it)
    seen = np.concatenate([xb[:, 0] for xb, _ in batches]).astype(int)
    assert sorted(seen) == list(range(n))
    sizes = [len(xb) for xb, _ in batches]
    assert sizes == it.batch_sizes()
    assert all(s == batch for s in sizes[:-1]) and sizes[-1] == n - (len(it) - 1) * batch
    for xb, yb in batches:
        np.testing.assert_array_equal(yb, xb[:, 0].astype(int) % 3)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), batch=st.integers(1, 80))
def test_drop_last_uses_floor(n, batch):
    if batch > n:
        with pytest.raises(ValueError, match="drop_last"):
            make(n, batch, drop_last=True)
        return
    it = make(n, batch, drop_last=True, seed=0)
    assert len(it) == n // batch
    batches = list(it)
    assert all(len(xb) == batch for xb, _ in batches)
    seen = np.concatenate([xb[:, 0] for xb, _ in batches])
    assert len(set(seen)) == len(seen) == (n // batch) * batch


def test_describe_states_the_plan():
    it = make(8000, 64)
    assert it.describe() == "8000 samples, batch 64 -> 125 iterations per epoch (last batch: 64 samples)"
    assert make(1000, 64).describe() == ("1000 samples, batch 64 -> 16 iterations per epoch "
                                         "(last batch: 40 samples)")
    assert "40 dropped" in make(1000, 64, drop_last=True).describe()


def test_reshuffles_every_epoch_and_is_reproducible():
    a, b = make(100, 10, seed=7), make(100, 10, seed=7)
    first, second = [np.concatenate([x[:, 0] for x, _ in a]) for _ in range(2)]
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, np.concatenate([x[:, 0] for x, _ in b]))
    np.testing.assert_array_equal(second, np.concatenate([x[:, 0] for x, _ in b]))
    other = np.concatenate([x[:, 0] for x, _ in make(100, 10, seed=8)])
    assert not np.array_equal(first, other)


def test_permutation_is_a_pure_function_of_seed_and_epoch():
    it = make(50, 7, seed=3)
    np.testing.assert_array_equal(it.permutation(4), make(50, 7, seed=3).permutation(4))
    resumed = np.concatenate([x[:, 0] for x, _ in it.batches(2, start=3)])
    np.testing.assert_array_equal(resumed, it.permutation(2)[21:])


def test_no_shuffle_keeps_order():
    it = make(10, 4, shuffle=False)
    np.testing.assert_array_equal(np.concatenate([x[:, 0] for x, _ in it]), np.arange(10))


def test_batches_reuse_one_buffer_unless_copy():
    X = np.random.default_rng(0).normal(size=(20, 3))
    it = mg.BatchIterator(X, np.zeros(20, int), 5, seed=0)
    views = [xb for xb, _ in it]
    assert all(np.shares_memory(views[0], v) for v in views)
    assert not np.shares_memory(views[0], X)


def test_converts_dtype_per_batch_and_reads_memmap(tmp_path):
    path = tmp_path / "x.u8"
    data = np.random.default_rng(0).integers(0, 255, size=(64, 5), dtype=np.uint8)
    mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=data.shape)
    mm[:] = data
    mm.flush()
    X = np.memmap(path, dtype=np.uint8, mode="r", shape=data.shape)
    it = mg.BatchIterator(X, np.arange(64) % 2, 16, seed=1, dtype=np.float32, copy=True)
    order = it.permutation(0)
    got = np.concatenate([xb for xb, _ in it])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, data[order].astype(np.float32))


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-1, ValueError), (2.0, TypeError),
                                     (True, TypeError), ("8", TypeError)])
def test_rejects_bad_batch_size(bad, exc):
    with pytest.raises(exc, match="batch_size"):
        make(10, bad)


def test_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="y has 9 labels"):
        mg.BatchIterator(np.zeros((10, 2)), np.zeros(9, int), 2)

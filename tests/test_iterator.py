"""BatchIterator invariants: ceil/floor lengths, each sample once, reshuffling, seeding."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigd as mg


def make(n, batch, **kwargs):
    X = np.arange(n, dtype=np.float32).reshape(n, 1)
    return mg.BatchIterator(X, np.arange(n) % 3, batch, **kwargs)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    batch=st.integers(1, 80),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**32),
)
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
    assert it.describe() == (
        "8000 samples, batch 64 -> 125 iterations per epoch (last batch: 64 samples)"
    )
    assert make(1000, 64).describe() == (
        "1000 samples, batch 64 -> 16 iterations per epoch (last batch: 40 samples)"
    )
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


def test_list_of_batches_gives_distinct_correct_batches():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(8000, 7)).astype(np.float32), rng.integers(0, 10, 8000)
    it = mg.BatchIterator(X, y, 64, seed=3)
    order = it.permutation(0)
    batches = list(it)
    assert len(batches) == 125
    for i, (xb, yb) in enumerate(batches):
        idx = order[i * 64 : (i + 1) * 64]
        np.testing.assert_array_equal(xb, X[idx])
        np.testing.assert_array_equal(yb, y[idx])
        assert not np.shares_memory(xb, X)
    for (a, _), (b, _) in zip(batches, batches[1:]):
        assert not np.shares_memory(a, b)


def test_batches_kept_across_a_loop_stay_correct():
    X = np.arange(40, dtype=np.float64).reshape(20, 2)
    y = np.arange(20) % 4
    it = mg.BatchIterator(X, y, 6, shuffle=False, dtype=np.float64)
    kept_x, kept_y = [], []
    for xb, yb in it:
        kept_x.append(xb)
        kept_y.append(yb)
    np.testing.assert_array_equal(np.concatenate(kept_x), X)
    np.testing.assert_array_equal(np.concatenate(kept_y), y)


def test_reuse_buffers_overwrites_each_batch():
    X = np.random.default_rng(0).normal(size=(20, 3))
    it = mg.BatchIterator(X, np.zeros(20, int), 5, seed=0, reuse_buffers=True)
    assert it.reuse_buffers and "reuse_buffers=True" in repr(it)
    views = [xb for xb, _ in it]
    assert all(np.shares_memory(views[0], v) for v in views)
    assert not np.shares_memory(views[0], X)
    np.testing.assert_array_equal(views[0], X[it.permutation(0)[15:]].astype(np.float32))


def test_copy_is_the_older_spelling_and_a_contradiction_is_an_error():
    X, y = np.zeros((10, 2)), np.zeros(10, int)
    assert not mg.BatchIterator(X, y, 2, copy=True).reuse_buffers
    assert mg.BatchIterator(X, y, 2, copy=False).reuse_buffers
    assert mg.BatchIterator(X, y, 2, copy=False, reuse_buffers=True).reuse_buffers
    assert not mg.BatchIterator(X, y, 2).reuse_buffers
    for copy, reuse in [(True, True), (False, False)]:
        with pytest.raises(ValueError, match="contradicts reuse_buffers"):
            mg.BatchIterator(X, y, 2, copy=copy, reuse_buffers=reuse)
    with pytest.raises(TypeError, match="reuse_buffers"):
        mg.BatchIterator(X, y, 2, reuse_buffers="yes")


def test_fresh_and_reused_batches_are_equal():
    rng = np.random.default_rng(1)
    X = rng.integers(0, 255, size=(50, 4), dtype=np.uint8)
    y = rng.integers(0, 3, 50)
    fresh = mg.BatchIterator(X, y, 8, seed=5)
    reused = mg.BatchIterator(X, y, 8, seed=5, reuse_buffers=True)
    for epoch in range(2):
        for (a, ya), (b, yb) in zip(fresh.batches(epoch, start=1), reused.batches(epoch, 1)):
            assert a.dtype == b.dtype == np.float32
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(ya, yb)


def test_converts_dtype_per_batch_and_reads_memmap(tmp_path):
    path = tmp_path / "x.u8"
    data = np.random.default_rng(0).integers(0, 255, size=(64, 5), dtype=np.uint8)
    mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=data.shape)
    mm[:] = data
    mm.flush()
    X = np.memmap(path, dtype=np.uint8, mode="r", shape=data.shape)
    it = mg.BatchIterator(X, np.arange(64) % 2, 16, seed=1, dtype=np.float32)
    order = it.permutation(0)
    got = np.concatenate([xb for xb, _ in it])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, data[order].astype(np.float32))


@pytest.mark.parametrize(
    "bad,exc",
    [(0, ValueError), (-1, ValueError), (2.0, TypeError), (True, TypeError), ("8", TypeError)],
)
def test_rejects_bad_batch_size(bad, exc):
    with pytest.raises(exc, match="batch_size"):
        make(10, bad)


def test_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="y has 9 labels"):
        mg.BatchIterator(np.zeros((10, 2)), np.zeros(9, int), 2)

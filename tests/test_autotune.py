"""The product choice is measured once per machine and shape, cached, reused, and a cache
entry that is not a valid choice is measured again rather than trusted."""

import json

import numpy as np
import pytest

from minigd.kernels import autotune, jit_gemm

pytestmark = pytest.mark.skipif(
    not autotune.blas_usable(), reason="one candidate only: SciPy's BLAS or threadpoolctl missing"
)
SHAPE = ("weight_grad", 8, 24, 12, np.float64, 1)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty minigd cache folder, no forced choice, no choices remembered in memory."""
    monkeypatch.setenv("MINIGD_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(autotune.ENV, raising=False)
    monkeypatch.setattr(autotune, "_memo", {})
    return tmp_path / autotune.FILE_NAME


def fresh_process(monkeypatch):
    monkeypatch.setattr(autotune, "_memo", {})


def entry(cache):
    data = json.loads(cache.read_text())
    return data["machines"][autotune.machine_key()][autotune.entry_key(*SHAPE)]


def test_first_use_measures_and_writes_the_cache(cache):
    before = autotune.measurements
    code = autotune.choice(*SHAPE)
    assert autotune.measurements == before + 1
    assert code in (jit_gemm.OWN, jit_gemm.BLAS)
    record = entry(cache)
    assert record["choice"] == autotune.CANDIDATES[code]
    assert set(record["seconds"]) == set(autotune.CANDIDATES)
    assert autotune.cached_choices() == {autotune.entry_key(*SHAPE): record["choice"]}


def test_choice_is_reused_from_the_cache_without_measuring(cache, monkeypatch):
    first = autotune.choice(*SHAPE)
    written = cache.read_text()
    fresh_process(monkeypatch)  # a new process: only the file remembers
    before = autotune.measurements
    assert autotune.choice(*SHAPE) == first
    assert autotune.measurements == before
    assert cache.read_text() == written


def test_a_cached_choice_wins_over_a_new_measurement(cache, monkeypatch):
    autotune.choice(*SHAPE)
    data = json.loads(cache.read_text())
    record = data["machines"][autotune.machine_key()][autotune.entry_key(*SHAPE)]
    record["seconds"] = {"own": 1.0, "blas": 2.0}  # a valid record that says "own"
    record["choice"] = "own"
    cache.write_text(json.dumps(data))
    fresh_process(monkeypatch)
    monkeypatch.setattr(autotune, "measure", lambda *a: pytest.fail("measured again"))
    assert autotune.choice(*SHAPE) == jit_gemm.OWN


@pytest.mark.parametrize(
    "corrupt",
    [
        {"choice": "fastest", "seconds": {"own": 1.0, "blas": 2.0}},
        {"choice": "blas", "seconds": {"own": 1.0, "blas": 2.0}},  # contradicts its timings
        {"choice": "own", "seconds": {"own": -1.0, "blas": 2.0}},
        {"choice": "own", "seconds": {"own": "1", "blas": 2.0}},
        {"choice": "own"},
        "own",
        None,
    ],
)
def test_a_corrupt_entry_is_measured_again(cache, monkeypatch, corrupt):
    autotune.choice(*SHAPE)
    data = json.loads(cache.read_text())
    data["machines"][autotune.machine_key()][autotune.entry_key(*SHAPE)] = corrupt
    cache.write_text(json.dumps(data))
    fresh_process(monkeypatch)
    before = autotune.measurements
    autotune.choice(*SHAPE)
    assert autotune.measurements == before + 1
    assert autotune._valid(entry(cache)) is not None  # rewritten as a valid entry


@pytest.mark.parametrize("text", ["{not json", "[]", '{"version": 999, "machines": {}}', ""])
def test_an_unreadable_file_is_measured_again_and_replaced(cache, monkeypatch, text):
    cache.write_text(text)
    before = autotune.measurements
    autotune.choice(*SHAPE)
    assert autotune.measurements == before + 1
    assert autotune._valid(entry(cache)) is not None


def test_forced_choice_and_bad_value(cache, monkeypatch):
    monkeypatch.setenv(autotune.ENV, "blas")
    assert autotune.choice(*SHAPE) == jit_gemm.BLAS
    monkeypatch.setenv(autotune.ENV, "own")
    assert autotune.choice(*SHAPE) == jit_gemm.OWN
    assert not cache.exists()
    monkeypatch.setenv(autotune.ENV, "fast")
    with pytest.raises(ValueError, match="MINIGD_PRODUCTS"):
        autotune.choice(*SHAPE)


def test_epoch_products_cover_full_and_last_batches(cache, monkeypatch):
    monkeypatch.setenv(autotune.ENV, "blas")
    products = autotune.epoch_products(np.array([[6, 5], [5, 3]]), 4, [4, 4, 2], np.float32, 1)
    assert products.shape == (2, 2, 3) and products.dtype == np.int64  # weight, input, forward
    assert products[:, 0, 1].tolist() == [jit_gemm.OWN, jit_gemm.OWN]  # no input grad below
    assert (products[:, 1, :2] == jit_gemm.BLAS).all() and (
        products[:, 0, 0] == jit_gemm.BLAS
    ).all()
    assert (products[:, :, 2] == jit_gemm.OWN).all()  # forward: own unless MINIGD_FORWARD_BLAS=1
    monkeypatch.setenv(autotune.FORWARD_ENV, "1")
    products = autotune.epoch_products(np.array([[6, 5], [5, 3]]), 4, [4, 4, 2], np.float32, 1)
    assert (products[:, :, 2] == jit_gemm.BLAS).all()
    assert autotune.describe(products) == "mixed (blas, own)"


@pytest.mark.parametrize("product", autotune.PRODUCTS)
def test_every_product_is_measured_and_cached_under_its_own_key(cache, monkeypatch, product):
    monkeypatch.setenv(autotune.FORWARD_ENV, "1")
    shape = (product, 8, 24, 12, np.float64, 1)
    code = autotune.choice(*shape)
    data = json.loads(cache.read_text())
    record = data["machines"][autotune.machine_key()][autotune.entry_key(*shape)]
    assert autotune._valid(record) == code


def test_cache_clear_forgets_the_choices(cache, monkeypatch, capsys):
    from minigd.cli import main

    autotune.choice(*SHAPE)
    assert cache.exists()
    assert main(["cache", "clear"]) == 0
    assert "removed 1 measured product choices" in capsys.readouterr().out
    assert not cache.exists()
    before = autotune.measurements
    autotune.choice(*SHAPE)  # measured again, not remembered
    assert autotune.measurements == before + 1


def test_machine_description():
    assert autotune.vector_isa() in ("AVX-512", "AVX2", "NEON", "SSE/other")
    assert autotune.vector_isa() in autotune.machine_key()
    assert autotune.cpu_model()

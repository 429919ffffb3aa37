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
    assert code in (jit_gemm.OWN, jit_gemm.BLAS, jit_gemm.BLAS_ROWS)
    record = entry(cache)
    assert record["choice"] == autotune.CANDIDATES[code]
    # the weight gradient: own loops, BLAS on a share of the output, BLAS on a share of the batch
    assert set(record["seconds"]) == {"own", "blas", "blas_rows"}
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
    record["seconds"] = {"own": 1.0, "blas": 2.0, "blas_rows": 3.0}  # valid, says "own"
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
        {"choice": "own", "seconds": {"own": 1.0, "blas": 2.0}},  # no blas_rows timing
        {"choice": "blas", "seconds": {"own": 1.0, "blas": 0.5, "blas_rows": 0.4}},  # not fastest
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
    assert set(entry(cache)["seconds"]) == set(autotune.CANDIDATES)


@pytest.mark.parametrize("text", ["{not json", "[]", '{"version": 999, "machines": {}}', ""])
def test_an_unreadable_file_is_measured_again_and_replaced(cache, monkeypatch, text):
    cache.write_text(text)
    before = autotune.measurements
    autotune.choice(*SHAPE)
    assert autotune.measurements == before + 1
    assert autotune._valid(entry(cache)) is not None


def test_a_file_of_an_earlier_version_is_measured_again(cache, monkeypatch):
    # a version-1 file holds epoch modes measured against a split mode without the autotuned
    # forward product, a version-2 one timings from before narrow layers split between the
    # threads, a version-3 one split modes timed without the "blas_rows" products: their
    # entries, valid in form, must not be trusted
    autotune.choice(*SHAPE)
    data = json.loads(cache.read_text())
    assert data["version"] == autotune.VERSION == 4
    for old in (1, 2, 3):
        data["version"] = old
        cache.write_text(json.dumps(data))
        fresh_process(monkeypatch)
        before = autotune.measurements
        autotune.choice(*SHAPE)
        assert autotune.measurements == before + 1
        assert json.loads(cache.read_text())["version"] == 4


def test_forced_choice_and_bad_value(cache, monkeypatch):
    monkeypatch.setenv(autotune.ENV, "blas")
    assert autotune.choice(*SHAPE) == jit_gemm.BLAS
    monkeypatch.setenv(autotune.ENV, "own")
    assert autotune.choice(*SHAPE) == jit_gemm.OWN
    assert not cache.exists()
    monkeypatch.setenv(autotune.ENV, "blas_rows")
    assert autotune.choice(*SHAPE) == jit_gemm.BLAS_ROWS
    # the input gradient's BLAS calls split the batch already: blas_rows is its BLAS
    assert autotune.choice("input_grad", *SHAPE[1:]) == jit_gemm.BLAS
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
    assert (products[:, :, 2] == jit_gemm.BLAS).all()  # forward: autotuned by default
    monkeypatch.setenv(autotune.FORWARD_ENV, "0")
    products = autotune.epoch_products(np.array([[6, 5], [5, 3]]), 4, [4, 4, 2], np.float32, 1)
    assert (products[:, :, 2] == jit_gemm.OWN).all()  # MINIGD_FORWARD_BLAS=0: always own
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
    candidates = autotune.product_candidates(product)
    assert autotune._valid(record, candidates) == code
    assert set(record["seconds"]) == set(candidates)
    assert ("blas_rows" in candidates) == (product != "input_grad")


@pytest.mark.parametrize(
    "seconds,chosen",
    [
        ({"own": 1.0, "blas": 0.9, "blas_rows": 0.96}, "blas"),
        ({"own": 1.0, "blas": 0.97, "blas_rows": 0.9}, "blas_rows"),
        ({"own": 1.0, "blas": 0.96, "blas_rows": 0.97}, "own"),  # within the 5% margin
        ({"own": 1.0, "blas": 0.9, "blas_rows": 0.9}, "blas"),  # a tie: the earlier one
    ],
)
def test_the_fastest_candidate_wins_beyond_the_margin(seconds, chosen):
    assert autotune._decide(seconds) == chosen


def test_an_unknown_product_is_refused():
    with pytest.raises(ValueError, match="product"):
        autotune.product_candidates("backward")


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


# ---- the epoch's mode: split between Numba's threads, or whole products on BLAS's ------------
DIMS = np.array([[24, 16], [16, 5]])
MODE = (DIMS, 8, np.float64, 2)


def mode_entry(cache, update_name=None):
    data = json.loads(cache.read_text())
    return data["machines"][autotune.machine_key()][autotune.mode_key(*MODE, update_name)]


@pytest.fixture
def auto_mode(cache, monkeypatch):
    monkeypatch.setenv(autotune.MODE_ENV, "auto")
    monkeypatch.setattr(autotune, "SETTLE_SECONDS", 0.0)
    return cache


def test_epoch_mode_is_measured_once_cached_and_reused(auto_mode, monkeypatch):
    before = autotune.measurements
    mode = autotune.epoch_mode(*MODE)
    assert mode in autotune.MODES
    record = mode_entry(auto_mode)
    assert record["choice"] == mode and set(record["seconds"]) == set(autotune.MODES)
    assert autotune._valid(record, autotune.MODES) == autotune.MODES.index(mode)
    measured = autotune.measurements - before  # the mode, and the split mode's products
    assert measured >= 1
    fresh_process(monkeypatch)
    monkeypatch.setattr(autotune, "measure_mode", lambda *a: pytest.fail("measured again"))
    monkeypatch.setattr(autotune, "measure", lambda *a: pytest.fail("measured again"))
    assert autotune.epoch_mode(*MODE) == mode
    assert autotune.mode_key(*MODE) in autotune.cached_choices()  # minigd cache info lists it


def test_the_mode_follows_the_measurement_and_the_margin(auto_mode, monkeypatch):
    timings = {"split": 1.0, "whole": 0.9}
    monkeypatch.setattr(autotune, "measure_mode", lambda *a: dict(timings))
    assert autotune.epoch_mode(*MODE) == "whole"
    fresh_process(monkeypatch)
    auto_mode.unlink()
    timings["whole"] = 0.97  # within the 5% margin: the default, split
    assert autotune.epoch_mode(*MODE) == "split"


@pytest.mark.parametrize(
    "measured,chosen,calls",
    [
        ([{"split": 1.0, "whole": 0.8}, {"split": 0.7, "whole": 1.2}], "split", 2),
        (
            [
                {"split": 1.4, "whole": 0.8},
                {"split": 1.0, "whole": 0.85},
                {"split": 0.9, "whole": 0.9},
            ],
            "whole",
            3,
        ),
        (
            [
                {"split": 1.4, "whole": 0.8},
                {"split": 1.3, "whole": 0.85},
                {"split": 0.8, "whole": 0.9},
            ],
            "split",
            3,
        ),
        ([{"split": 1.0, "whole": 1.2}], "split", 1),
    ],
    ids=["split-on-the-second", "whole-after-three", "split-on-the-third", "split-at-once"],
)
def test_whole_is_chosen_only_when_it_leads_on_each_modes_best_timing(
    auto_mode, monkeypatch, measured, chosen, calls
):
    queue = list(measured)
    monkeypatch.setattr(autotune, "measure_mode", lambda *a: queue.pop(0))
    assert autotune.epoch_mode(*MODE) == chosen
    assert len(measured) - len(queue) == calls
    best = {m: min(t[m] for t in measured[:calls]) for m in autotune.MODES}
    assert mode_entry(auto_mode)["seconds"] == best  # each mode's best timing is recorded


def test_the_optimizer_update_is_measured_and_keyed(auto_mode):
    calls = []
    mode = autotune.epoch_mode(*MODE, update=("adam", calls.append))
    assert calls and set(calls) == {1, 2}  # run on one thread in whole, on 2 in split
    assert mode_entry(auto_mode, "adam")["choice"] == mode
    assert autotune.mode_key(*MODE, "adam").endswith(" adam")
    assert autotune.mode_key(*MODE) != autotune.mode_key(*MODE, "adam")


@pytest.mark.parametrize(
    "corrupt",
    [
        {"choice": "whole", "seconds": {"split": 1.0, "whole": 2.0}},  # contradicts its timings
        {"choice": "own", "seconds": {"own": 1.0, "blas": 2.0}},  # a product's record
        {"choice": "whole", "seconds": {"split": 1.0}},
        {"choice": "fast", "seconds": {"split": 1.0, "whole": 0.5}},
        "whole",
    ],
)
def test_a_corrupt_mode_entry_is_measured_again(auto_mode, monkeypatch, corrupt):
    autotune.epoch_mode(*MODE)
    data = json.loads(auto_mode.read_text())
    data["machines"][autotune.machine_key()][autotune.mode_key(*MODE)] = corrupt
    auto_mode.write_text(json.dumps(data))
    fresh_process(monkeypatch)
    before = autotune.measurements
    autotune.epoch_mode(*MODE)
    assert autotune.measurements >= before + 1
    assert autotune._valid(mode_entry(auto_mode), autotune.MODES) is not None


def test_forced_mode_and_when_split_is_the_only_mode(auto_mode, monkeypatch):
    monkeypatch.setattr(autotune, "measure_mode", lambda *a: pytest.fail("measured"))
    monkeypatch.setenv(autotune.MODE_ENV, "whole")
    assert autotune.epoch_mode(*MODE) == "whole"
    monkeypatch.setenv(autotune.MODE_ENV, "split")
    assert autotune.epoch_mode(*MODE) == "split"
    monkeypatch.setenv(autotune.MODE_ENV, "auto")
    assert autotune.epoch_mode(DIMS, 8, np.float64, 1) == "split"  # one thread: nothing to gain
    monkeypatch.setenv(autotune.ENV, "own")
    assert autotune.epoch_mode(*MODE) == "split"  # whole runs BLAS: not with products forced own
    monkeypatch.setenv(autotune.MODE_ENV, "fastest")
    with pytest.raises(ValueError, match="MINIGD_EPOCH_MODE"):
        autotune.epoch_mode(*MODE)
    assert not auto_mode.exists()


def test_whole_epoch_runs_every_product_on_blas_threads_and_restores(cache):
    from minigd.kernels import jit_config

    pools = autotune._blas_pools()
    before = [lib.get_num_threads() for lib in pools]
    parts = jit_config.parallel_parts()
    with autotune.whole_epoch(3):
        assert autotune.whole_active()
        assert jit_config.parallel_parts() == 1
        assert [lib.get_num_threads() for lib in pools] == [3] * len(pools)
        for product in autotune.PRODUCTS:  # the forward product included
            assert autotune.choice(product, 8, 24, 12, np.float32, 1) == jit_gemm.BLAS
        with autotune.blas_threads_limited([jit_gemm.BLAS]):  # a no-op here
            assert [lib.get_num_threads() for lib in pools] == [3] * len(pools)
    assert not autotune.whole_active()
    assert jit_config.parallel_parts() == parts
    assert [lib.get_num_threads() for lib in pools] == before
    assert not cache.exists()  # nothing measured


def test_the_activations_are_measured_and_keyed(auto_mode, monkeypatch):
    from minigd.kernels import codes

    seen = []
    real = autotune._network_operands

    def spy(dims, rows, dtype, update=None, acts=None):
        seen.append(acts)
        return real(dims, rows, dtype, update, acts)

    monkeypatch.setattr(autotune, "_network_operands", spy)
    tanh = [codes.ACT_TANH, codes.ACT_NONE]
    mode = autotune.epoch_mode(*MODE, acts=tanh)
    assert seen in ([tanh], [tanh, tanh])  # twice when whole won the first measurement
    key = autotune.mode_key(*MODE, acts=tanh)
    assert " tanh,none " in key and key != autotune.mode_key(*MODE)
    assert " relu,none " in autotune.mode_key(*MODE)  # the default: ReLU between layers
    assert autotune.cached_choices()[key] == mode
    with pytest.raises(ValueError, match="acts"):
        autotune.mode_key(*MODE, acts=[codes.ACT_TANH])


def test_auto_is_the_default(cache, monkeypatch):
    monkeypatch.delenv(autotune.MODE_ENV, raising=False)
    monkeypatch.setattr(autotune, "measure_mode", lambda *a: {"split": 1.0, "whole": 0.5})
    assert autotune.epoch_mode(*MODE) == "whole"


def test_forward_blas_switch_reads_on_off_and_rejects_anything_else(monkeypatch):
    monkeypatch.delenv(autotune.FORWARD_ENV, raising=False)
    assert autotune.forward_blas_enabled()  # on by default
    for value, on in (("0", False), ("off", False), ("False", False), ("1", True), ("yes", True)):
        monkeypatch.setenv(autotune.FORWARD_ENV, value)
        assert autotune.forward_blas_enabled() is on, value
    monkeypatch.setenv(autotune.FORWARD_ENV, "blas")
    with pytest.raises(ValueError, match="MINIGD_FORWARD_BLAS='blas'"):
        autotune.choice("forward", 8, 24, 12, np.float32, 1)

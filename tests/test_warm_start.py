"""Warm start: the first run trains on NumPy while Numba compiles in the background, and
switches to Numba at an epoch boundary once the kernels are ready (minigd.kernels.warm_start).
The background process is replaced by a stand-in whose progress the test controls."""

import numpy as np
import pytest

import minigd as mg
from minigd.kernels import warm_start


class FakeProcess:
    def __init__(self, finishes_after, code=0):
        self.polls, self.finishes_after, self.code = 0, finishes_after, code

    def poll(self):
        self.polls += 1
        return self.code if self.polls > self.finishes_after else None


class Spy(mg.Callback):
    def __init__(self):
        self.backends = []

    def on_epoch_end(self, state):
        self.backends.append(mg.get_backend())


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.random((96, 12), dtype=np.float32), rng.integers(0, 3, 96)


def train(data, callbacks):
    X, y = data
    model = mg.Sequential(mg.Dense(12, 8), mg.ReLU(), mg.Dense(8, 3), seed=0)
    with mg.use_backend("numba"):
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(model.parameters(), lr=0.1),
            epochs=4,
            batch_size=32,
            seed=0,
            verbose=0,
            callbacks=callbacks,
        )
        return mg.get_backend()


def setup(monkeypatch, process, ready_after_finish=True):
    monkeypatch.delenv(warm_start.ENV, raising=False)
    state = {"ready": False}

    def start(*args):
        return process

    def ready():
        return state["ready"] or (ready_after_finish and process.polls > process.finishes_after)

    monkeypatch.setattr(warm_start, "start_compile", start)
    monkeypatch.setattr(warm_start, "kernels_ready", ready)


def test_starts_on_numpy_and_switches_when_the_compile_is_done(monkeypatch, data):
    process = FakeProcess(finishes_after=2)  # polled at the start of epochs 1, 2, 3
    setup(monkeypatch, process)
    warm, spy = warm_start.WarmStart(), Spy()
    final = train(data, [warm, spy])
    assert spy.backends[:2] == ["numpy", "numpy"]
    assert spy.backends[2:] == ["numba", "numba"]
    assert warm.switched_at == 3 and final == "numba"


def test_a_failed_compile_stays_on_numpy(monkeypatch, data):
    process = FakeProcess(finishes_after=0, code=1)
    setup(monkeypatch, process)
    spy = Spy()
    train(data, [warm_start.WarmStart(), spy])
    assert spy.backends == ["numpy"] * 4


def test_opt_out_and_warm_cache_compile_in_the_foreground(monkeypatch, data):
    process = FakeProcess(finishes_after=0)
    setup(monkeypatch, process)
    monkeypatch.setenv(warm_start.ENV, "0")
    spy = Spy()
    train(data, [warm_start.WarmStart(), spy])
    assert spy.backends == ["numba"] * 4 and process.polls == 0
    monkeypatch.delenv(warm_start.ENV)
    monkeypatch.setattr(warm_start, "kernels_ready", lambda: True)
    spy = Spy()
    train(data, [warm_start.WarmStart(), spy])
    assert spy.backends == ["numba"] * 4


def test_the_background_job_is_picklable_and_compiles(monkeypatch, data):
    """What the background process runs, run here: one epoch of a copy of the model."""
    import pickle

    X, y = data
    model = mg.Sequential(mg.Dense(12, 8), mg.Tanh(), mg.Dense(8, 3), seed=0)
    optimizer = mg.Adam(model.parameters(), lr=0.01)
    sent = {}

    class Popen:
        def __init__(self, command, **kwargs):
            self.stdin = self
            sent["command"] = command

        def write(self, payload):
            sent["job"] = pickle.loads(payload)

        def close(self):
            pass

    monkeypatch.setattr(warm_start.subprocess, "Popen", Popen)
    assert warm_start.start_compile(model, optimizer, X, y, 32) is not None
    job = sent["job"]
    assert job["rows"] == 32 and job["optimizer"] is mg.Adam and job["x_dtype"] == "<f4"
    from minigd.kernels import autotune

    monkeypatch.setenv(autotune.ENV, "auto")  # restored after the test: compile_job sets it
    warm_start.compile_job(job)  # trains the copy; the original is untouched
    assert warm_start.os.environ[autotune.ENV] == "own"  # no measuring in the background
    assert np.array_equal(
        model.parameters()[0].value,
        mg.Sequential(mg.Dense(12, 8), mg.Tanh(), mg.Dense(8, 3), seed=0).parameters()[0].value,
    )


def test_the_background_job_carries_the_loss_and_the_target_shape(monkeypatch):
    """A regression run's job compiles with its own loss on value targets of its shape."""
    import pickle

    rng = np.random.default_rng(1)
    X, y = rng.random((40, 6), dtype=np.float32), rng.random((40, 2), dtype=np.float32)
    model = mg.Sequential(mg.Dense(6, 4), mg.ReLU(), mg.Dense(4, 2), seed=0)
    sent = {}

    class Popen:
        def __init__(self, command, **kwargs):
            self.stdin = self

        def write(self, payload):
            sent["job"] = pickle.loads(payload)

        def close(self):
            pass

    monkeypatch.setattr(warm_start.subprocess, "Popen", Popen)
    optimizer = mg.SGD(model.parameters(), lr=0.1)
    assert warm_start.start_compile(model, optimizer, X, y, 16, loss=mg.MSELoss()) is not None
    job = sent["job"]
    assert isinstance(job["loss"], mg.MSELoss) and job["y_shape"] == (2,)
    assert job["rows"] == 16 + 8 and job["y_dtype"] == "<f4"
    from minigd.kernels import autotune

    monkeypatch.setenv(autotune.ENV, "auto")
    fits = []
    real_fit = mg.fit
    monkeypatch.setattr(mg, "fit", lambda *a, **k: fits.append((a, k)) or real_fit(*a, **k))
    warm_start.compile_job(job)
    ((args, kwargs),) = fits
    assert isinstance(kwargs["loss"], mg.MSELoss) and args[2].shape == (24, 2)


def test_numpy_blas_runs_on_one_thread_while_the_compile_runs(monkeypatch, data):
    """Two BLAS threads and the compiler on 2 cores oversubscribe: one BLAS thread until the
    compile is done, then the original thread count again."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    blas = threadpoolctl.ThreadpoolController().select(user_api="blas")
    if not blas.lib_controllers:
        pytest.skip("no BLAS that threadpoolctl can see")
    before = blas.info()[0]["num_threads"]
    process = FakeProcess(finishes_after=2)
    setup(monkeypatch, process)

    class Threads(mg.Callback):
        def __init__(self):
            self.seen = []

        def on_epoch_begin(self, state):
            self.seen.append(threadpoolctl.ThreadpoolController().select(user_api="blas").info())

    warm, threads = warm_start.WarmStart(), Threads()
    train(data, [warm, threads])
    assert [i[0]["num_threads"] for i in threads.seen[:2]] == [1, 1]
    assert (
        threadpoolctl.ThreadpoolController().select(user_api="blas").info()[0]["num_threads"]
        == before
    )

"""fit end to end: accuracy on the bundled sample, the history it records, schedules, stopping."""

import json
import math

import numpy as np
import pytest

import minigd as mg
from minigd import schedules as S


@pytest.fixture(scope="module")
def sample():
    return mg.datasets.load_mnist_sample()


def mnist_model(seed=0, dtype=np.float32):
    return mg.Sequential(mg.Dense(784, 128), mg.ReLU(), mg.Dense(128, 10), seed=seed, dtype=dtype)


def test_reaches_90_percent_on_the_held_out_sample(sample, backend):
    X, y, X_test, y_test = sample
    model = mnist_model()
    history = mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.1),
        epochs=5,
        batch_size=64,
        seed=0,
        verbose=0,
    )
    accuracy = mg.accuracy(model, X_test, y_test)
    assert accuracy >= 0.90, accuracy
    losses = history.epochs["train_loss"]
    assert losses[-1] < losses[0] < math.log(10) * 1.2


def small_problem(n=103, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)
    return X, y


def small_model(seed=0, dtype=np.float64):
    return mg.Sequential(mg.Dense(5, 8), mg.Tanh(), mg.Dense(8, 3), seed=seed, dtype=dtype)


def test_history_records_every_iteration(backend):
    X, y = small_problem()
    model = small_model()
    history = mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.1),
        epochs=3,
        batch_size=10,
        seed=1,
        verbose=0,
    )
    it = history.iterations
    assert len(set(map(len, it.values()))) == 1
    assert history.n_iterations == 3 * 11
    assert it["step"] == list(range(1, 34))
    assert it["epoch"] == [1] * 11 + [2] * 11 + [3] * 11
    assert it["iteration"] == list(range(1, 12)) * 3
    assert it["batch_size"] == ([10] * 10 + [3]) * 3
    assert set(it["lr"]) == {0.1}
    ep = history.epochs
    assert ep["epoch"] == [1, 2, 3] and ep["val_loss"] == [None] * 3
    first = np.array(it["loss"][:11])
    assert ep["train_loss"][0] == pytest.approx(np.dot(first, it["batch_size"][:11]) / 103)
    assert all(s > 0 for s in ep["seconds"]) and all(r > 0 for r in ep["samples_per_second"])


def test_fit_matches_a_hand_written_loop(backend):
    X, y = small_problem()
    model, reference = small_model(), small_model()
    history = mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.2, momentum=0.5),
        epochs=2,
        batch_size=16,
        seed=3,
        verbose=0,
    )
    opt = mg.SGD(reference.parameters(), lr=0.2, momentum=0.5)
    loss = mg.SoftmaxCrossEntropy()
    it = mg.BatchIterator(X, y, 16, seed=3, dtype=np.float64)
    losses = []
    for _ in range(2):
        for xb, yb in it:
            losses.append(loss.forward(reference(xb), yb))
            reference.backward(loss.backward())
            opt.step()
    np.testing.assert_allclose(history.iterations["loss"], losses, rtol=1e-12)
    np.testing.assert_allclose(model.flat_values, reference.flat_values, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "schedule,expected",
    [
        (S.StepDecay(0.1, 1, 0.5), lambda e, s: 0.1 * 0.5**e),
        (S.CyclicLR(0.01, 0.1, 4), lambda e, s: S.CyclicLR(0.01, 0.1, 4)(s)),
        (
            S.Warmup(S.Constant(0.1, unit="iteration"), 5, 0.2),
            lambda e, s: 0.1 * min(1, 0.2 + 0.8 * s / 5),
        ),
    ],
)
def test_recorded_lr_is_the_schedule_at_epoch_or_iteration(schedule, expected):
    X, y = small_problem()
    model = small_model()
    history = mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=1.0),
        epochs=3,
        batch_size=25,
        schedule=schedule,
        seed=0,
        verbose=0,
    )
    it = history.iterations
    want = [expected(e - 1, s - 1) for e, s in zip(it["epoch"], it["step"])]
    np.testing.assert_allclose(it["lr"], want, rtol=1e-12)


def test_same_seed_gives_bit_identical_runs(backend):
    X, y = small_problem()
    runs = []
    for _ in range(2):
        model = small_model(dtype=np.float32)
        history = mg.fit(
            model,
            X,
            y,
            optimizer=mg.Adam(model.parameters(), lr=0.01),
            epochs=2,
            batch_size=8,
            seed=5,
            verbose=0,
        )
        runs.append((model.flat_values.copy(), history.iterations["loss"]))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


def relu_model(seed=0):
    return mg.Sequential(mg.Dense(5, 8), mg.ReLU(), mg.Dense(8, 3), seed=seed)


class Snapshot(mg.Callback):
    def on_iteration_end(self, state):
        self.last = state.model.flat_values.copy()


@pytest.mark.filterwarnings("ignore:X is far from unit scale")  # X * 10, on purpose
@pytest.mark.parametrize("lr", [1e2, 1e6])
def test_divergence_stops_before_the_poisoned_update(lr, backend):
    X, y = small_problem()
    model, snapshot = relu_model(), Snapshot()
    with pytest.warns(RuntimeWarning, match=r"diverged.*epoch 1, iteration \d+ .*with lr"):
        history = mg.fit(
            model,
            X * 10,
            y,
            optimizer=mg.SGD(model.parameters(), lr=lr),
            epochs=5,
            batch_size=10,
            seed=0,
            verbose=0,
            callbacks=[snapshot],
        )
    assert history.diverged and history.n_epochs == 0
    d = history.divergence
    assert d["step"] == history.n_iterations and d["lr"] == lr
    if d["cause"] == "loss":
        assert not math.isfinite(history.iterations["loss"][-1])
    assert np.all(np.isfinite(model.flat_values))
    np.testing.assert_array_equal(model.flat_values, snapshot.last)


@pytest.mark.filterwarnings("ignore:X is far from unit scale")
def test_divergence_can_raise_with_the_facts():
    X, y = small_problem()
    model = relu_model()
    with pytest.raises(mg.DivergenceError) as info:
        mg.fit(
            model,
            X * 10,
            y,
            optimizer=mg.SGD(model.parameters(), lr=1e6),
            epochs=5,
            batch_size=10,
            seed=0,
            verbose=0,
            on_divergence="raise",
        )
    error = info.value
    assert error.history.diverged and error.lr == 1e6 and error.epoch >= 1
    assert f"iteration {error.iteration}" in str(error)


def test_early_stopping_restores_best_weights(sample):
    X, y, X_test, y_test = sample
    X_small, y_small = X[:300], y[:300]
    model = mnist_model()
    stopper = mg.EarlyStopping(patience=2, restore_best=True)
    history = mg.fit(
        model,
        X_small,
        y_small,
        optimizer=mg.SGD(model.parameters(), lr=0.5),
        epochs=40,
        batch_size=32,
        seed=0,
        verbose=0,
        validation_data=(X_test[:300], y_test[:300]),
        callbacks=[stopper],
    )
    assert history.stopped_early and history.n_epochs < 40
    best = int(np.argmin(history.epochs["val_loss"]))
    assert stopper.best_epoch == best + 1
    restored = mg.evaluate(model, X_test[:300], y_test[:300])["loss"]
    assert restored == pytest.approx(history.epochs["val_loss"][best], rel=1e-5)


def test_early_stopping_restores_even_when_epochs_run_out():
    X, y = small_problem()
    model = small_model()
    stopper = mg.EarlyStopping(monitor="val_loss", patience=100)
    history = mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=2.0),
        epochs=6,
        batch_size=10,
        validation_data=(X, y),
        callbacks=[stopper],
        seed=0,
        verbose=0,
    )
    assert not history.stopped_early
    best = int(np.argmin(history.epochs["val_loss"]))
    assert mg.evaluate(model, X, y)["loss"] == pytest.approx(history.epochs["val_loss"][best])


def test_verbose_prints_plan_and_epoch_lines(capsys):
    X, y = small_problem()
    model = small_model()
    mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.1),
        epochs=2,
        batch_size=10,
        validation_data=(X, y),
        seed=0,
        verbose=1,
    )
    out = capsys.readouterr().out
    assert (
        "plan: 103 samples, batch 10 -> 11 iterations per epoch (last batch: 3 samples); "
        "2 epochs = 22 updates"
    ) in out
    assert "epoch 2/2  train_loss" in out and "val_acc" in out and "samples/s" in out


def test_history_exports_round_trip(tmp_path):
    X, y = small_problem()
    model = small_model()
    history = mg.fit(
        model,
        X,
        y,
        optimizer=mg.SGD(model.parameters(), lr=0.1),
        epochs=2,
        batch_size=50,
        seed=0,
        verbose=0,
    )
    history.to_json(tmp_path / "h.json")
    assert mg.History.from_json(tmp_path / "h.json") == history
    history.to_csv(tmp_path / "h.csv")
    lines = (tmp_path / "h.csv").read_text().splitlines()
    assert lines[0] == "epoch,iteration,step,batch_size,lr,loss,grad_norm" and len(lines) == 1 + 6
    history.to_csv(tmp_path / "e.csv", table="epochs")
    assert (tmp_path / "e.csv").read_text().startswith("epoch,train_loss,val_loss")
    data = json.loads((tmp_path / "h.json").read_text())
    assert data["iterations"]["step"] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(epochs=0), ValueError, "epochs"),
        (dict(epochs=True), TypeError, "epochs"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(verbose=3), ValueError, "verbose"),
        (dict(schedule="cosine"), TypeError, "schedule"),
        (dict(validation_data=np.zeros((3, 5))), TypeError, "validation_data"),
        (dict(callbacks=[object()]), TypeError, "callbacks"),
        (dict(on_divergence="ignore"), ValueError, "on_divergence"),
    ],
)
def test_fit_rejects_bad_arguments_before_training(kwargs, exc, match):
    X, y = small_problem()
    model = small_model()
    before = model.flat_values.copy()
    args = dict(optimizer=mg.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=10, verbose=0)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        mg.fit(model, X, y, **args)
    np.testing.assert_array_equal(model.flat_values, before)


def test_fit_rejects_an_optimizer_of_another_model():
    X, y = small_problem()
    model = small_model()
    with pytest.raises(ValueError, match="another model"):
        mg.fit(
            model,
            X,
            y,
            optimizer=mg.SGD(small_model().parameters(), lr=0.1),
            epochs=1,
            batch_size=10,
            verbose=0,
        )

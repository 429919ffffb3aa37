"""mg.EvaluateEvery: held-out evaluation every few updates, without changing the run."""

import numpy as np
import pytest

import minigd as mg


@pytest.fixture(scope="module")
def data():
    X, y, X_test, y_test = mg.datasets.load_mnist_sample()
    return X[:512], y[:512], X_test[:300], y_test[:300]


def model():
    return mg.Sequential(mg.Dense(784, 32), mg.ReLU(), mg.Dense(32, 10), seed=3)


def train(data, callbacks=()):
    X, y, _, _ = data
    m = model()
    history = mg.fit(
        m,
        X,
        y,
        optimizer=mg.SGD(m.parameters(), lr=0.1),
        epochs=2,
        batch_size=64,
        seed=1,
        verbose=0,
        callbacks=callbacks,
    )
    return m, history


def test_records_start_every_and_end(data):
    probe = mg.EvaluateEvery(data[2], data[3], every=5)
    m, history = train(data, [probe])
    assert history.n_iterations == 16
    assert probe.steps == [0, 5, 10, 15, 16]
    np.testing.assert_allclose(probe.epochs, [0.0, 5 / 8, 10 / 8, 15 / 8, 2.0])
    final = mg.evaluate(m, data[2], data[3])
    assert probe.accuracy[-1] == final["accuracy"]
    assert probe.loss[-1] == final["loss"]
    initial = mg.evaluate(model(), data[2], data[3])
    assert probe.accuracy[0] == initial["accuracy"]
    assert probe.loss[0] == initial["loss"]
    assert probe.accuracy[-1] > probe.accuracy[0] + 0.3


def test_evaluating_does_not_change_training(data):
    plain_model, plain = train(data)
    probed_model, probed = train(data, [mg.EvaluateEvery(data[2], data[3], every=3)])
    assert plain.iterations == probed.iterations
    for key, value in plain_model.state_dict().items():
        np.testing.assert_array_equal(value, probed_model.state_dict()[key])


def test_steps_to_reach_returns_the_first_step_at_or_above_target(data):
    probe = mg.EvaluateEvery(data[2], data[3], every=2)
    train(data, [probe])
    target = probe.accuracy[-1]
    expected = next(s for s, a in zip(probe.steps, probe.accuracy) if a >= target)
    assert probe.steps_to_reach(target) == expected
    assert probe.steps_to_reach(0.0) == 0
    assert probe.steps_to_reach(max(probe.accuracy) + 1e-9) is None
    with pytest.raises(ValueError, match="accuracy"):
        probe.steps_to_reach(1.5)


def test_a_new_run_starts_new_records(data):
    probe = mg.EvaluateEvery(data[2], data[3], every=8)
    train(data, [probe])
    train(data, [probe])
    assert probe.steps == [0, 8, 16]


def test_arguments_are_checked():
    X = np.zeros((4, 784), np.float32)
    with pytest.raises(ValueError, match="every"):
        mg.EvaluateEvery(X, np.zeros(4, int), every=0)
    with pytest.raises(ValueError, match="y has 3 labels but X has 4 samples"):
        mg.EvaluateEvery(X, np.zeros(3, int))
    with pytest.raises(ValueError, match="X must be 2-D"):
        mg.EvaluateEvery(np.zeros(784), np.zeros(1, int))
